"""User-facing errors: the CLI prints their message on one line and exits with their code."""


class HarnessError(Exception):
    """A mistake in what the user gave us (not a bug): one line, no traceback."""

    exit_code = 1


class UsageError(HarnessError):
    """Bad command line, config key, variant or fold (exit code 2)."""

    exit_code = 2


class DataError(HarnessError):
    """The dataset is missing, malformed or unusable (exit code 2 when detected before a run starts)."""

    exit_code = 2
