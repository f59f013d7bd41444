"""Writing files and folders so that a crash never leaves half of one.

A file is written to a temporary name in the same folder and renamed over the target
(``os.replace`` is atomic on POSIX and Windows); a folder is built under a temporary name and
swapped in through a second rename. Every writer in runassist (run folder, checkpoints, the
tokenisation cache, predictions, plots) goes through here. A leaf module: it imports nothing
of runassist, so anything may use it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``, on an error
    it is removed and ``path`` is left as it was. A device or a pipe (``-o /dev/null``, a FIFO) is
    written as it is: renaming a file over it would replace the device itself."""
    path = Path(path)
    if is_special(path):
        binary = "b" in mode
        with open(path, mode, encoding=None if binary else encoding, newline=None if binary else newline) as handle:
            yield handle
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        binary = "b" in mode
        with os.fdopen(fd, mode, encoding=None if binary else encoding,
                       newline=None if binary else newline) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_special(path: str | Path) -> bool:
    """True for an existing path that is neither a regular file nor a folder (/dev/null, a FIFO)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    import stat

    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to ``path`` atomically."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)


def write_json(path: str | Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def swap_folder(staged: str | Path, target: str | Path) -> None:
    """Put the complete folder ``staged`` at ``target``, replacing what was there.

    ``target`` moves to ``.<name>.old`` first and is dropped after ``staged`` took its name, so a
    kill between the renames leaves one complete folder under one of the two names
    (``find_folder`` looks at both).
    """
    staged, target = Path(staged), Path(target)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staged.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def find_folder(target: str | Path, marker: str) -> Path | None:
    """``target`` if it holds ``marker``, else the ``.old`` copy a swap interrupted mid-way left."""
    target = Path(target)
    for candidate in (target, target.with_name(f".{target.name}.old")):
        if (candidate / marker).is_file():
            return candidate
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
