"""sparrow-sd: lossless speculative decoding for Video LLMs with text-anchored drafts."""

__version__ = "0.1.0"
