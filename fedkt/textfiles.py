"""Reading a text file a user or another machine wrote, with one-line errors.

Every file fedkt reads as text (configs, results files) fails the same three
ways: missing, unreadable, or not UTF-8 (a binary dropped in by mistake). One
helper words those failures once, naming the file, and raises the caller's
error class so the CLI prints it as one line.
"""

from __future__ import annotations

from pathlib import Path


def read_text(path: Path, error: type[Exception], kind: str = "text file") -> str:
    """The UTF-8 text of ``path``; any failure is ``error`` with one line naming it.

    ``kind`` says what the file should have been ("YAML text file"), so the
    message tells the user what fedkt expected to find there.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise error(
            f"{path}: not a {kind} (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start} is not UTF-8)"
        ) from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
