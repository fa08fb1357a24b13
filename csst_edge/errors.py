"""Errors a user can cause and fix. The CLI prints them as one red line (no traceback unless --debug)."""


class CsstError(Exception):
    """Base class for known, user-facing errors. The message must say what is wrong and where."""


class DatasetError(CsstError):
    """A dataset file or folder is missing, unreadable or inconsistent; the message names the file."""


class ConfigError(CsstError):
    """A config file or override is invalid; the message names the key or option."""


class CheckpointError(CsstError):
    """A checkpoint is missing, corrupt or incompatible; the message names the file."""
