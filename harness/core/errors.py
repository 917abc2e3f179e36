"""User-facing errors: the CLI prints their message on one line and exits with their code."""

import difflib


class HarnessError(Exception):
    """A mistake in what the user gave us (not a bug): one line, no traceback, exit code 1 unless a subclass says."""

    exit_code = 1


class UsageError(HarnessError):
    """Bad command line, config key, variant or fold (exit code 2)."""

    exit_code = 2


class DataError(HarnessError):
    """The dataset is missing, malformed or unusable (exit code 1)."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): for one-line reports."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def one_line(exc: BaseException) -> str:
    """'Type: first line', for recording why something failed."""
    text = first_line(exc)
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def did_you_mean(name: str, known, cutoff: float = 0.6) -> str:
    """' (did you mean X?)' for the closest of `known`, or '' when none is close: the hint every
    "unknown ..." message ends with."""
    near = difflib.get_close_matches(str(name), list(known), n=1, cutoff=cutoff)
    return f" (did you mean {near[0]}?)" if near else ""
