"""Whole workflows built from the library pieces: the demo, a self-training round, few-shot transfer."""
