"""Opening a home's node database for the node and the operator commands (`start`, `rollback`,
`inspect`, `export`, `unsafe-reset-all`): LevelDB lets one process hold a database, and a database
held by a running node is reported as one line that says so, not as LevelDB's lock error."""

from __future__ import annotations

from pathlib import Path

import plyvel

from storage.db import Database, StorageError


def in_use_error(path: Path) -> StorageError:
    return StorageError(
        f"the database {path} is in use by another process (is a node already running on this home?)"
    )


def explained(exc: StorageError, path: Path) -> StorageError:
    """`exc` (from opening the database at `path`), or the in-use error if LevelDB refused the
    database's lock file."""
    cause = exc.__cause__
    if isinstance(cause, plyvel.IOError) and "LOCK" in str(cause):
        return in_use_error(path)
    return exc


def open_database(path: Path, *, create: bool = True) -> Database:
    """The database at `path` (created if absent and `create`); StorageError if there is none and
    not `create`, or if another process holds it (`in_use_error`)."""
    if not create and not (path / "CURRENT").is_file():  # LevelDB's: a database is there
        raise StorageError(f"there is no node database at {path}: the node has not run on this home")
    try:
        return Database(path)
    except StorageError as exc:
        raise explained(exc, path) from exc.__cause__


def ensure_not_in_use(path: Path) -> None:
    """StorageError (`in_use_error`) if a process holds the database at `path`; nothing if there
    is none. Opens and closes it: the check holds until someone opens it again."""
    if path.is_dir():
        open_database(path).close()
