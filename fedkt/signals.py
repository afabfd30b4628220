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
from types import FrameType
from typing import NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises ``KeyboardInterrupt``."""


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated(signal.Signals(signum).name)


def handle_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in the main thread. (Python runs
    signal handlers only there, so elsewhere this does nothing.)"""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


def describe(stop: KeyboardInterrupt) -> str:
    """How the process was stopped, for its one closing line."""
    return "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"


def exit_status(stop: KeyboardInterrupt) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number
    (130 after Ctrl-C, 143 after SIGTERM)."""
    signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
    return 128 + int(signum)
