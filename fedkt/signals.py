"""SIGTERM stops fedkt the way Ctrl-C does.

Process managers (``timeout``, systemd, Docker, Kubernetes) stop a process with SIGTERM;
a user at a terminal stops it with Ctrl-C (SIGINT). Both must end the same way: finished
rounds kept, one line saying how to continue, a prompt exit, no traceback. Python turns
SIGINT into :class:`KeyboardInterrupt`; :func:`handle_sigterm` makes SIGTERM raise
:class:`Terminated`, a ``KeyboardInterrupt``, so that every ``except KeyboardInterrupt``
that cleans up after Ctrl-C serves both, and no second stop path exists to drift apart.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_ending: list[bool] = []  # one entry per open ``ends_at_stop`` block


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises ``KeyboardInterrupt``."""


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated(signal.Signals(signum).name)


def handle_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in the main thread. (Python runs
    signal handlers only there, so elsewhere this does nothing.)"""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold back the stop signals in the calling thread for this block; they are
    delivered when it ends. Used where a stop's exception must not land halfway: around
    setting a ``threading.Event`` (raised between its lock's acquire and the ``with``
    block, it leaves the lock held and every later ``set`` or ``wait`` hanging), and
    around starting a thread, which inherits the mask and so never takes the signals."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def describe(stop: KeyboardInterrupt) -> str:
    """How the process was stopped, for its one closing line."""
    return "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"


def exit_status(stop: KeyboardInterrupt) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number
    (130 after Ctrl-C, 143 after SIGTERM)."""
    signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
    return 128 + int(signum)


@contextmanager
def ends_at_stop() -> Iterator[None]:
    """Declare that, inside this block, a stop ends the whole process (``os._exit``) once
    it has been reported: the ``fedkt`` command and a comparison's job processes. What a
    stop leaves to clean up may then be done after the process has exited instead of
    racing its last line (see :func:`fedkt.server.shared_engine.stop_ray`). A library
    caller, who catches the ``KeyboardInterrupt`` and goes on, never enters it."""
    _ending.append(True)
    try:
        yield
    finally:
        _ending.pop()


def process_ends_at_stop() -> bool:
    """Whether a stop now ends this process (inside :func:`ends_at_stop`)."""
    return bool(_ending)
