"""Errors a user can cause and fix. The CLI prints them as one red line (no traceback unless --debug)."""


class CsstError(Exception):
    """Base class for known, user-facing errors. The message must say what is wrong and where.

    A DataLoader worker's exception reaches the main process re-created from text: torch calls
    `type(e)("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback ...: <message>")`.
    The constructor recognises that text and keeps only the original message, so an error raised while a worker
    decodes a file is still the one line that names the file.
    """

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            args = (_unwrap_worker_message(args[0], type(self)),)
        super().__init__(*args)


def _unwrap_worker_message(message: str, cls: type) -> str:
    """The original message inside torch's ExceptionWrapper text, or `message` itself when it is not one."""
    if not (message.startswith("Caught ") and "\nOriginal Traceback" in message):
        return message
    for name in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: "):
        at = message.rfind("\n" + name)
        if at >= 0:
            return message[at + 1 + len(name) :].strip()
    return message


class DatasetError(CsstError):
    """A dataset file or folder is missing, unreadable or inconsistent; the message names the file."""


class ConfigError(CsstError):
    """A config file or override is invalid; the message names the key or option."""


class CheckpointError(CsstError):
    """A checkpoint is missing, corrupt or incompatible; the message names the file."""


class TrainingDivergedError(CsstError, FloatingPointError):
    """The loss became NaN or infinite; the message names the epoch, the iteration and what to change."""
