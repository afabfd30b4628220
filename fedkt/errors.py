"""User-facing errors.

Every mistake a user can make (a bad config field, a missing data file, a wrong CLI
argument) raises a :class:`FedktError` whose message is one line naming what is wrong.
The CLI prints that line and exits non-zero instead of showing a traceback.
"""


def one_line(text: str) -> str:
    """``text`` on one line: runs of whitespace become one space, other unprintable
    characters (which terminals and ``splitlines`` may treat as line breaks) are escaped."""
    text = " ".join(text.split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class FedktError(Exception):
    """A problem the user can fix; its message is a single, self-explanatory line
    (whitespace, including newlines from messages of the libraries below, is collapsed)."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(str(message)), *args)


class ConfigError(FedktError):
    """An invalid experiment configuration."""


class DataError(FedktError):
    """Data that cannot be found, read or verified."""


class ResultsError(FedktError):
    """A results file that cannot be read back: edited, cut short, or not written by fedkt
    (``--resume`` and ``--reuse`` read directories that users and other machines wrote)."""


REJECTION_REASONS = (
    "shape",
    "dtype",
    "non_finite",
    "range",
    "normalisation",
    "magnitude",
    "counts",
    "identity",
    "malformed",
    "invalid",
)


class KnowledgeError(FedktError):
    """Knowledge sent by a client that fails validation. ``reason`` is a short category
    (``shape``, ``dtype``, ``non_finite``, ``range``, ``normalisation``, ``magnitude``,
    ``counts``, ``identity``, ``malformed``) under which the server counts rejections."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class MissedHandshake(RuntimeError):
    """A client asked to train or evaluate without the experiment config: its node
    restarted after the server's handshake (the server then sends it again). The message
    starts with :data:`fedkt.protocol.MISSED_HANDSHAKE`, which the server looks for."""

    def __init__(self, detail: str) -> None:
        from fedkt.protocol import MISSED_HANDSHAKE

        super().__init__(f"{MISSED_HANDSHAKE}: {detail}")
