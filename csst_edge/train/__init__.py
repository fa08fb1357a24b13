"""Trainer, losses, crop schedules, checkpoints and distributed helpers."""
