"""The cross-process lease: which process indexes a store directory.

Rules kept here:
- one indexer per store directory: the process holding an exclusive ``flock`` on
  ``search.lock`` in the store directory. The kernel drops the lock when its process dies, so a
  crashed indexer never blocks the next one; the descriptor is not inherited by programs the
  process spawns;
- the lease is taken without waiting (`take`): a process that does not get it reads the index
  and leaves its work in the outbox for the holder; it tries again at its next write or search;
- a damaged lock path (a directory, a dangling symlink) is repaired when it can be (an empty
  directory or a dangling link is removed) and refused with a clear `IMError` otherwise;
- after ``fork`` the child forgets the lease without releasing it (`forget`): the lock belongs
  to the open file both processes share, and the parent keeps indexing.
"""

from __future__ import annotations

import errno
import fcntl
import os

from ..errors import ErrorCode, IMError

__all__ = ["LOCK_FILE", "Lease", "try_lock"]

LOCK_FILE = "search.lock"


def try_lock(path: str) -> int | None:
    """An open descriptor holding an exclusive flock on ``path``, or None when another open
    file (another process) holds it."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if os.path.islink(path) and not os.path.exists(path):  # a dangling symlink
            os.unlink(path)
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if os.path.isdir(path) and exc.errno in (errno.EISDIR, errno.EEXIST):
            try:
                os.rmdir(path)  # an empty directory in its place: nothing of ours is lost
            except OSError:
                raise IMError(ErrorCode.DATABASE_ERROR,
                              f"{path} is a directory, so the search index cannot be locked; "
                              "move it out of the store directory") from exc
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        raise IMError(ErrorCode.DATABASE_ERROR,
                      f"the search index lock {path} cannot be opened ({exc.strerror}); check "
                      "the store directory's permissions") from exc


class Lease:
    """The indexer lease of one store directory."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, LOCK_FILE)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def take(self) -> bool:
        """Take the lease if no other process holds it; returns whether this process holds it."""
        if self._fd is None:
            self._fd = try_lock(self.path)
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # releases the flock

    def forget(self) -> None:
        """In a forked child: close our copy of the descriptor (the parent's keeps the lock)."""
        self.release()
