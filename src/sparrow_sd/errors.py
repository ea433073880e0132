"""The errors sparrow-sd raises on bad input, each naming the problem.

All derive from :class:`SparrowError`, so a command line can turn any of them into
a one-line message instead of a traceback.
"""


class SparrowError(Exception):
    """Base class of every error sparrow-sd raises on purpose."""


class UnsupportedModelError(SparrowError, TypeError):
    """The model is not one of the Video-LLM classes sparrow-sd has an adapter for."""


class VideoTokenMismatchError(SparrowError, ValueError):
    """The prompt's video placeholder tokens do not match the video's grid."""


class DraftTargetMismatchError(SparrowError, ValueError):
    """The draft was built for another target (hidden size, vocabulary, layer)."""


class CacheCapacityError(SparrowError, RuntimeError):
    """A KV cache was asked to hold more positions than it was allocated for."""


class ProposerError(SparrowError, RuntimeError):
    """A proposer broke its contract: a tree not rooted at the last emitted token, too large, or malformed."""


class InvalidInputError(SparrowError, ValueError):
    """An argument is out of range or inconsistent (shapes, lengths, settings)."""


class AssetError(SparrowError):
    """A weight file sparrow-sd needs is missing, corrupt or of the wrong shape.

    The message names the file and the command (usually ``make assets``) that
    fetches or rebuilds it.
    """


class ContextLengthError(SparrowError, ValueError):
    """The prompt (usually its video) and the tokens to generate do not fit the model's positions."""


class OutputPathError(SparrowError, OSError):
    """An output path cannot be written (a file in the way, a read-only place, no permission)."""


class DeviceError(SparrowError, ValueError):
    """The ``--device`` is not one torch knows, or is not present on this machine."""


class MissingExtraError(SparrowError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class RunInterrupted(SparrowError):
    """The run was stopped by a signal (Ctrl-C, SIGTERM) after saving what can be resumed.

    ``exit_code`` is the shell's convention for the signal (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
