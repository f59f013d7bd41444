"""Where a study lives: Optuna's journal file by default (several worker processes on one machine, no
server), or an RDB URL (PostgreSQL, MySQL, SQLite) that workers on several machines share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HEARTBEAT_S = 60  # RDB: a worker's trial that has not beaten for GRACE_S is taken as dead (another machine)
GRACE_S = 180


def is_url(storage: str) -> bool:
    return "://" in storage


def open_storage(storage: str) -> Any:
    """``storage``: a journal file path, or an RDB URL."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    if is_url(storage):
        return optuna.storages.RDBStorage(storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The open(O_EXCL) lock: it works on file systems without symlinks too.
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def shown(storage: str) -> str:
    """The storage as files and reports may show it: an RDB URL without its password."""
    if not is_url(storage):
        return storage
    from sqlalchemy.engine import make_url

    return make_url(storage).render_as_string(hide_password=True)
