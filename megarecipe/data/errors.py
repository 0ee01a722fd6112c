"""The one error type of the data layer."""


class DataError(ValueError):
    """Bad input or a bad data dir. The message is one line naming the file or field and the fix."""
