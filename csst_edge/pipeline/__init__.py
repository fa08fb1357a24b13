"""Whole workflows built from the library pieces: the demo and (later) self-training rounds."""
