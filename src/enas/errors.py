"""Error types. A `UserError` is a problem with the user's input (a path, a file, a flag): the CLI prints its
message on one line and exits with status 2, without a traceback. Anything else is a bug (status 1)."""


class UserError(Exception):
    """A problem the user can fix; the message says what to do."""


class ArchError(UserError):
    """A malformed or invalid architecture (file, dict or integer notation)."""


class DataError(UserError):
    """Missing, corrupted or malformed data."""


class ConfigError(UserError):
    """An unknown or ill-typed configuration key or value."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the run directory keeps the last good checkpoint."""
