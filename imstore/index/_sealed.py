"""A whoosh `Storage` whose every file is sealed (`imstore._crypto.seal`): a search index that
holds no plaintext on disk (`imstore._crypto` owns the keys and the sealing; this module only
puts whoosh's files through it, since `imstore.index` alone imports whoosh).

Rules kept here:
- a file is written whole, in memory, and sealed when whoosh closes it; it reaches the folder
  through a temporary name and one rename, so a crash leaves the old file or the new one, never
  half of either (temporary names are not listed);
- reads decrypt the whole file once and keep the plaintext in a bounded in-memory cache keyed by
  the file's path and identity on disk (inode, size, mtime): whoosh's files never change once written, so
  a hit is exact; a rewritten or renamed file is read again;
- temporary storage (whoosh's sort pools) is sealed too, under the same key, inside the folder;
- lock files are empty and stay plain (they carry no data);
- one `Sealing` (the index key and one cache) serves every storage of a store's index in this
  process: the writer's, the searches' and their temporary storages;
- a file that does not unseal (another key, plaintext, changed) raises `IMError`: the index
  treats it as damage and rebuilds;
- fork: a child gets every cache empty, with a fresh lock.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from io import BytesIO
from typing import Any

from whoosh.filedb.filestore import FileStorage, ReadOnlyError
from whoosh.filedb.structfile import BufferFile, StructFile
from whoosh.util import random_name

from .._crypto import seal, sealed_length, unseal

__all__ = ["DEFAULT_CACHE_BYTES", "EncryptedStorage", "Sealing"]

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
_TMP = ".imstmp"  # suffix of a file being written


class _Cache:
    """Plaintexts by file identity, least recently used out first, within a byte budget."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._size = 0
        self._items: OrderedDict[str, tuple[tuple[int, int, int], bytes]] = OrderedDict()
        self._lock = threading.Lock()
        _CACHES.add(self)

    def renew(self) -> None:
        """In a forked child: a fresh lock (a thread of the parent may have held this one) and
        an empty cache (that thread may have been changing it)."""
        self._lock = threading.Lock()
        self._items = OrderedDict()
        self._size = 0

    def get(self, name: str, ident: tuple[int, int, int]) -> bytes | None:
        with self._lock:
            item = self._items.get(name)
            if item is None or item[0] != ident:
                return None
            self._items.move_to_end(name)
            return item[1]

    def put(self, name: str, ident: tuple[int, int, int], data: bytes) -> None:
        with self._lock:
            self._drop(name)
            if len(data) > self._budget:
                return
            self._items[name] = (ident, data)
            self._size += len(data)
            while self._size > self._budget:
                self._drop(next(iter(self._items)))

    def drop(self, name: str) -> None:
        with self._lock:
            self._drop(name)

    def _drop(self, name: str) -> None:
        item = self._items.pop(name, None)
        if item is not None:
            self._size -= len(item[1])


_CACHES: weakref.WeakSet[_Cache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_CACHES):
        cache.renew()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Sealing:
    """What the sealed storages of one index share: its key (`imstore._crypto.index_key`) and
    one cache of decrypted files, ``cache_bytes`` at most (0: none, for a process that only
    writes)."""

    def __init__(self, key: bytes, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.key = key
        self.cache = _Cache(cache_bytes)

    def storage(self, path: str, *, readonly: bool = False) -> EncryptedStorage:
        return EncryptedStorage(path, self, readonly=readonly)


def _ident(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class EncryptedStorage(FileStorage):  # type: ignore[misc]
    """`FileStorage` over ``path`` with every file sealed under the key of ``sealing``, whose
    cache keeps decrypted files (bounded)."""

    supports_mmap = False

    def __init__(self, path: str, sealing: Sealing, *, readonly: bool = False) -> None:
        super().__init__(path, supports_mmap=False, readonly=readonly)
        self._sealing = sealing
        self._key = sealing.key
        self._cache = sealing.cache

    def __repr__(self) -> str:
        return f"EncryptedStorage({self.folder!r})"

    def create_file(self, name: str, excl: bool = False, mode: str = "wb",
                    **kwargs: Any) -> StructFile:
        if self.readonly:
            raise ReadOnlyError
        if excl:  # claim the name now, as whoosh expects of an exclusive create
            os.close(os.open(self._fpath(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

        def sealed_on_close(sfile: StructFile) -> None:
            self._write(name, sfile.file.getvalue())

        return StructFile(BytesIO(), name=name, onclose=sealed_on_close, **kwargs)

    def _write(self, name: str, data: bytes) -> None:
        path = self._fpath(name)
        tmp = f"{path}.{random_name()}{_TMP}"
        try:
            with open(tmp, "wb") as f:
                f.write(seal(self._key, data))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        self._cache.put(path, _ident(os.stat(path)), data)

    def read_bytes(self, name: str) -> bytes:
        """The plaintext of file ``name``."""
        path = self._fpath(name)
        with open(path, "rb") as f:
            ident = _ident(os.fstat(f.fileno()))
            data = self._cache.get(path, ident)
            if data is None:
                data = unseal(self._key, f.read(), f"index file {name!r}")
                self._cache.put(path, ident, data)
        return data

    def open_file(self, name: str, **kwargs: Any) -> BufferFile:
        return BufferFile(memoryview(self.read_bytes(name)), name=name, **kwargs)

    def list(self) -> list[str]:
        return [n for n in super().list() if not n.endswith(_TMP)]

    def file_length(self, name: str) -> int:
        return sealed_length(os.path.getsize(self._fpath(name)))

    def delete_file(self, name: str) -> None:
        super().delete_file(name)
        self._cache.drop(self._fpath(name))

    def rename_file(self, oldname: str, newname: str, safe: bool = False) -> None:
        super().rename_file(oldname, newname, safe)
        self._cache.drop(self._fpath(oldname))
        self._cache.drop(self._fpath(newname))

    def clean(self, ignore: bool = False) -> None:
        for name in self.list():
            self._cache.drop(self._fpath(name))
        super().clean(ignore)

    def temp_storage(self, name: str | None = None) -> EncryptedStorage:
        name = name or f"{random_name()}.tmp"
        temp = EncryptedStorage(os.path.join(self.folder, name), self._sealing)
        temp.create()
        return temp
