"""Draft training: self-distilled data (datagen), records, the MTP unroll, the trainer."""
