"""Ctrl-C and SIGTERM: where they go while a run trains, writes its end, or is launched.

During training the first signal asks the trainer to stop after the batch in progress (its resume
checkpoint of that point is written); a second one a moment later stops at once. Elsewhere they
raise (`Stopped` for SIGTERM, exit 143; KeyboardInterrupt for SIGINT, 130), and while a run's end
is written they are held off. Python delivers signals to the main thread only, so outside it these
helpers change nothing.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from contextlib import contextmanager

from harness.core import collectives

REPEAT_WINDOW_S = 1.0


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM, as SIGINT raises KeyboardInterrupt (exit 128 + 15)."""

    exit_code = 143


def _exception_for(signum: int) -> BaseException:
    return Stopped() if signum == signal.SIGTERM else KeyboardInterrupt()


def _raise_for(signum, frame):
    raise _exception_for(signum)


@contextmanager
def stop_signals_to(handler):
    """SIGINT and SIGTERM go to `handler` while inside (main thread only: Python delivers signals
    there, and signal.signal refuses elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stops_between_batches(trainer, announce: bool = True):
    """While training, the first SIGINT or SIGTERM asks the trainer to stop after the batch in
    progress, so it saves exactly where it is; a second one raises at once (the last checkpoint stays).
    `announce=False` keeps the first stop silent (a tuning trial: its study says how it ended)."""
    first: list[float] = []

    def handler(signum, frame):
        if trainer.stop_request is not None:
            # under --devices a rank may get one signal twice (from the terminal's process group, and
            # forwarded by the launcher): only a second signal a moment later means "at once"
            if collectives.world_size() == 1 or time.monotonic() - first[0] > REPEAT_WINDOW_S:
                raise _exception_for(signum)
            return
        first.append(time.monotonic())
        trainer.request_stop(_exception_for(signum))
        if announce and collectives.is_main():  # under --devices every rank gets the signal; one says so
            sys.stderr.write("stopping after the current batch to save a checkpoint (signal again to stop at once)\n")

    return stop_signals_to(handler)


def stop_signals_raise():
    """While inside, SIGTERM raises Stopped and SIGINT KeyboardInterrupt, also when the process was
    started with SIGINT ignored (a background job of a script)."""
    return stop_signals_to(_raise_for)


def stop_signals_ignored():
    """SIGINT and SIGTERM held off while a run's end is being written."""
    return stop_signals_to(signal.SIG_IGN)
