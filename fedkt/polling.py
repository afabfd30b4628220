"""How long a process that can only poll waits before asking again.

Why: a deployment's processes learn of work by polling over the network (the ServerApp
asks the SuperLink for replies, a warm ClientApp worker asks its SuperNode for a task), and
on a small machine each poll is CPU taken from the clients' training: measured on 2 cores
(BENCHMARKS.md, "Deployed rounds"), a worker asking its SuperNode every 0.1 s used about a
third more CPU than one asking every 0.5 s, and a ServerApp pulling every 0.02 s a third
of the SuperLink's CPU. Asking rarely instead makes every hand-off late.

A *quiet backoff* gets both: right after something happened (a reply, a finished task)
the next thing is often near, so ask soon; the longer nothing has come, the less a poll
is likely to find, so ask less often. Waiting ``share`` of the quiet time so far means
that whatever arrives after ``t`` quiet seconds is seen at most ``share * t`` late (and
never more than ``cap``), while an idle process polls a bounded number of times per
doubling of its wait.
"""

from __future__ import annotations


def quiet_pause(quiet_for: float, floor: float, cap: float, share: float) -> float:
    """Seconds to wait before the next poll, ``quiet_for`` seconds after the last event:
    ``share * quiet_for``, kept within [``floor``, ``cap``]."""
    return max(floor, min(cap, share * max(0.0, quiet_for)))
