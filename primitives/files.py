"""Durable files: whole-file replacement that is atomic and synced, the `DurableFile`
interface the WAL and the private validator's state write through, and the advice a failed
durable write ends with (`remedy`).

`OSFile` is the real thing (write, fsync, rename, directory fsync). The interface exists so the
deterministic simulator can give each simulated node an in-memory file whose unsynced bytes are
lost, or torn, when that node crashes, exercising the same recovery code as a real crash.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Protocol

NO_SPACE = os.strerror(errno.ENOSPC)
"""how the OS says ENOSPC ("No space left on device"); LevelDB's errors carry only this text"""


def remedy(error: Exception) -> str:
    """What the operator does about a failed durable write: "free space and restart" when the
    disk (or the user's quota) is full, "check the disk and restart" otherwise."""
    full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    if full or NO_SPACE in str(error):
        return "free space and restart"
    return "check the disk and restart"


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` through a synced temporary file renamed over it, then sync the
    directory, so that after a crash `path` holds either the old or the new content. If it
    fails (OSError) before the rename, `path` is untouched and the temporary file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):  # the write's error is the one to report
            tmp.unlink(missing_ok=True)  # a full disk keeps no half-written copy of the file
        raise
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """fsync a directory so that a rename or a new file in it is durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableFile(Protocol):
    """A file that is appended to and synced explicitly, or replaced whole."""

    @property
    def name(self) -> str: ...

    def read(self) -> bytes:
        """The whole current content (b"" if the file does not exist)."""
        ...

    def append(self, data: bytes) -> None:
        """Append `data`; it is durable only after `sync`."""
        ...

    def sync(self) -> None: ...

    def truncate(self, size: int) -> None:
        """Cut the file to `size` bytes, durably."""
        ...

    def replace(self, data: bytes) -> None:
        """Replace the whole content atomically and durably."""
        ...

    def close(self) -> None: ...


class OSFile:
    """A DurableFile on the real file system."""

    def __init__(self, path: Path, mode: int = 0o600) -> None:
        self.path = path
        self.mode = mode
        self._fh: object | None = None
        path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def name(self) -> str:
        return str(self.path)

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def _handle(self) -> int:
        if self._fh is None:
            self._fh = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, self.mode)
        assert isinstance(self._fh, int)
        return self._fh

    def append(self, data: bytes) -> None:
        fd = self._handle()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def sync(self) -> None:
        os.fsync(self._handle())

    def truncate(self, size: int) -> None:
        os.truncate(self.path, size)
        self.sync()

    def replace(self, data: bytes) -> None:
        self.close()
        atomic_write(self.path, data, self.mode)

    def close(self) -> None:
        if isinstance(self._fh, int):
            os.close(self._fh)
        self._fh = None
