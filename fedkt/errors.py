"""User-facing errors.

Every mistake a user can make (a bad config field, a missing data file, a wrong CLI
argument) raises a :class:`FedktError` whose message is one line naming what is wrong.
The CLI prints that line and exits non-zero instead of showing a traceback.
"""


class FedktError(Exception):
    """A problem the user can fix; its message is a single, self-explanatory line."""


class ConfigError(FedktError):
    """An invalid experiment configuration."""


class DataError(FedktError):
    """Data that cannot be found, read or verified."""


REJECTION_REASONS = ("shape", "dtype", "non_finite", "range", "normalisation", "magnitude", "counts", "identity", "malformed", "invalid")


class KnowledgeError(FedktError):
    """Knowledge sent by a client that fails validation. ``reason`` is a short category
    (``shape``, ``dtype``, ``non_finite``, ``range``, ``normalisation``, ``magnitude``,
    ``counts``, ``identity``, ``malformed``) under which the server counts rejections."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason
