"""Errors a user can fix (a setting, a missing file or corpus): every command prints their message alone and exits
with status 1, without a traceback (emotion_lightning.training.commands). Anything else is a bug and keeps its
traceback. Each also derives from the built-in type it replaces, so `except ValueError` keeps working."""


class UsageError(Exception):
    """An expected failure; the message names the file or setting and the fix."""


class SettingError(UsageError, ValueError):
    """A setting whose value cannot work."""


class MissingFileError(UsageError, FileNotFoundError):
    """A file or folder named by the settings (checkpoint, audio, split file, corpus) is not there."""
