"""The helper process that writes segments, both ends of its pipe.

Rules kept here:
- the helper (``python -m imstore.index._helper PARENT_PID``) holds no lock: the parent holds
  the index's writer lock and commits the segments the helper wrote into the index directory;
- one request, one answer, each a length-prefixed msgpack frame: a segment request
  (directory, index name, index key or None, documents) is answered with the segment's id,
  size, field lengths and the row ids left out; a texts request (message rows' type and
  payloads) with each row's folded texts (`_outbox.folded_texts`, the one owner of that rule);
  the key of an encrypted store's index travels only there (never in argv or the environment),
  and with it the helper seals every file it writes;
- the helper exits when its stdin closes or its parent dies (``PR_SET_PDEATHSIG`` on Linux);
- work is shared with it through `Split` only: the helper does one part while this process
  does the other; any failure of the helper (it cannot start, send, answer, or is dead) is
  this process's cue to do that part too, and the helper is started again for the next
  batch; a request whose answer might never be read (this process failed after sending it)
  drops the helper, so an answer is never taken for a later request's.
"""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgpack
from whoosh.codec.whoosh3 import W3Segment
from whoosh.filedb.filestore import FileStorage

from ._collector import collector_paused
from ._format import Doc, ImCodec, schema, write_segment
from ._outbox import folded_texts
from ._sealed import Sealing

__all__ = ["INDEXNAME", "PARALLEL_DOCS", "Helper", "Split"]

log = logging.getLogger("imstore.search")

INDEXNAME = "MAIN"
_SEGMENT, _TEXTS = "segment", "texts"  # the kinds of request
PARALLEL_DOCS = 4_000  # a batch this large is shared with the helper process
_T = TypeVar("_T")
_R = TypeVar("_R")
_CODEC = ImCodec()


class Helper:
    """A helper process (``python -m imstore.index._helper``) that writes segments. It holds no lock
    and exits when its stdin closes or its parent dies; any failure here falls back to writing
    in this process."""

    def __init__(self) -> None:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imstore.index._helper", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, close_fds=True)

    def send(self, directory: str, docs: Sequence[Doc], key: bytes | None = None) -> None:
        """Ask for a segment of ``docs`` in ``directory`` (answered by `receive`)."""
        self._request([_SEGMENT, directory, INDEXNAME, key,
                       [(d.rowid, d.sort_time, d.conv_id, d.content, d.ext) for d in docs]])

    def send_texts(self, rows: Sequence[tuple[int, bytes, bytes | None]]) -> None:
        """Ask for the folded texts of message rows (type, body, ext), answered by
        `receive_texts`."""
        self._request([_TEXTS, [list(r) for r in rows]])

    def _request(self, request: list[Any]) -> None:
        payload = msgpack.packb(request, use_bin_type=True, unicode_errors="surrogatepass")
        assert self.proc.stdin is not None
        self.proc.stdin.write(struct.pack("!Q", len(payload)))
        self.proc.stdin.write(payload)
        self.proc.stdin.flush()

    def _reply(self) -> list[Any]:
        assert self.proc.stdout is not None
        head = self.proc.stdout.read(8)
        if len(head) < 8:
            raise EOFError("the segment helper exited")
        (size,) = struct.unpack("!Q", head)
        reply: list[Any] = msgpack.unpackb(self.proc.stdout.read(size), raw=False,
                                           unicode_errors="surrogatepass")
        if reply[0] != "ok":
            raise RuntimeError(f"the segment helper failed: {reply[1]}")
        return reply

    def receive_texts(self) -> list[tuple[str, str] | None]:
        return [None if t is None else (t[0], t[1]) for t in self._reply()[1]]

    def receive(self) -> tuple[Any, list[int]]:
        _, segid, count, lengths, skipped = self._reply()
        if segid is None:
            return None, list(skipped)
        seg = W3Segment(_CODEC, INDEXNAME, doccount=count, segid=segid)
        seg._fieldlengths = dict(lengths)
        return seg, list(skipped)

    def close(self) -> None:
        proc = self.proc
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=5)
        except Exception:
            proc.kill()
            proc.wait()
        finally:
            if proc.stdout:
                proc.stdout.close()


class Split:
    """Work shared with one helper process (started when first needed, under a lock);
    ``workers`` 1 means this process alone."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.helper: Helper | None = None
        self._lock = threading.Lock()

    def shares(self, n: int) -> bool:
        """Whether ``n`` items are worth sharing."""
        return self.workers >= 2 and n >= PARALLEL_DOCS

    def run(self, items: Sequence[_T], first: int, here: Callable[[Sequence[_T]], list[_R]],
            send: Callable[[Helper, Sequence[_T]], None],
            receive: Callable[[Helper], list[_R]]) -> list[_R]:
        """``here`` of ``items[:first]``, then what the helper answers for the rest (it works
        while this process does its part), or ``here`` of the rest when the helper fails."""
        mine, theirs = items[:first], items[first:]
        helper = self._get()
        if helper is not None:
            try:
                send(helper, theirs)
            except Exception as exc:
                log.info("index helper unavailable (%r); working here", exc)
                self._drop()
                helper = None
        try:
            out = here(mine) if mine else []
        except BaseException:
            if helper is not None:  # its answer must never be read as a later request's
                self._drop()
            raise
        if helper is not None:
            try:
                return out + receive(helper)
            except Exception as exc:
                log.info("index helper failed (%r); working here", exc)
                self._drop()
        return out + here(theirs)

    def _get(self) -> Helper | None:
        with self._lock:
            if self.helper is not None and self.helper.proc.poll() is not None:
                dead, self.helper = self.helper, None
                try:
                    dead.close()  # its pipes
                except Exception:
                    pass
            if self.helper is None:
                try:
                    self.helper = Helper()
                except Exception as exc:
                    log.info("no index helper (%r)", exc)
                    self.workers = 1
            return self.helper

    def _drop(self) -> None:
        with self._lock:
            if self.helper is not None:
                helper, self.helper = self.helper, None
                try:
                    helper.proc.kill()
                    helper.close()
                except Exception:
                    pass

    def close(self) -> None:
        with self._lock:
            if self.helper is not None:
                self.helper.close()
                self.helper = None

    def forget(self) -> None:
        """Drop the helper without stopping it (in a forked child: it is the parent's)."""
        self._lock = threading.Lock()  # a thread of the parent may have held it
        self.helper = None


# -- the helper's side --------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (best effort elsewhere: the closed
    pipe ends the loop below)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _serve(parent: int) -> None:
    """Read requests from stdin: write a segment (directory, index name, key, documents) and
    answer with its id, size and field lengths, or fold message rows' texts; exit at end of
    input. Holds no lock: the parent holds the index's writer lock and commits what it gets back."""
    _die_with_parent(parent)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    codec = ImCodec()
    sch = schema()
    while True:
        head = inp.read(8)
        if len(head) < 8:
            return
        (size,) = struct.unpack("!Q", head)
        try:
            with collector_paused():
                reply = _answer(msgpack.unpackb(inp.read(size), raw=False,
                                                unicode_errors="surrogatepass"), codec, sch)
        except Exception as exc:  # the parent does this work itself
            reply = ["error", repr(exc)]
        data = msgpack.packb(reply, use_bin_type=True, unicode_errors="surrogatepass")
        out.write(struct.pack("!Q", len(data)) + data)
        out.flush()


def _answer(request: list[Any], codec: ImCodec, sch: Any) -> list[Any]:
    if request[0] == _TEXTS:
        return ["ok", [folded_texts(*r) for r in request[1]]]
    _, directory, indexname, key, rows = request
    docs = [Doc(r[0], r[1], r[2], "", 0, r[3], r[4]) for r in rows]
    storage = (FileStorage(directory) if key is None else
               Sealing(key, cache_bytes=0).storage(directory))  # it only writes
    seg, skipped = write_segment(storage, indexname, sch, docs, codec)
    return (["ok", None, 0, {}, skipped] if seg is None else
            ["ok", seg.segid, seg.doc_count_all(), seg._fieldlengths, skipped])


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
