"""Errors a user can act on. The CLI prints them as one line, never as a traceback."""

from __future__ import annotations


class RunassistError(Exception):
    """A problem the user can fix (bad config, bad data, missing file)."""


class ConfigError(RunassistError):
    """An invalid config key or value; the message names the key and what is allowed."""


class DataError(RunassistError):
    """Bad input data. Formats as ``path:line: message`` so editors can jump to it."""

    def __init__(self, path: object, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class MediaTooLarge(ValueError):
    """An input file over a size limit (bytes, pixels, seconds of audio): the service answers 413."""
