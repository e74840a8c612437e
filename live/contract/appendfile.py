"""Append-only outputs with one writer: the one rule for every file that grows line by
line (study sessions, ``live.run`` records and markers, training logs, curation shards,
a reviewer's decisions).

* **One writer.** `OutputLock` guards an output (a file or a folder) with a lock file
  ``<name>.lock`` holding the owner's process id, host and start time. The lock is an
  ``flock`` on that file, so the kernel releases it when the owner dies however it dies
  (kill -9 included): a lock left by a dead process is taken over, with a notice line
  naming the old owner; a live owner refuses the second writer with `OutputLocked`
  naming it.
* **Never glue onto a torn tail.** `repair_tail` cuts a last line without its newline
  (what a process killed mid-write leaves), keeps the cut bytes aside in
  ``<file>.torn`` and says so; `AppendFile` does it before its first append.
* **A line is durable or an error.** `AppendFile.append` writes one whole line with
  ``O_APPEND``, fsyncs it, and raises `OSError` naming the file when the write fails
  (a full disk, a removed folder), cutting what part of the line was written: nothing
  reports success for data it did not store, and no torn line is left.
* **Owner-only.** Files made here are 0600; `private_dir` makes folders 0700 (study
  data is a participant's picture, voice and words).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from live.contract.files import PRIVATE_MODE as FILE_MODE  # owner read/write only

DIR_MODE = 0o700  # owner only
LOCK_SUFFIX = ".lock"
TORN_SUFFIX = ".torn"
READ_CHUNK = 1 << 16  # bytes read per step when looking back for the last newline

Notice = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def private_dir(path: str | Path) -> Path:
    """``path`` created (with parents) and made owner-only (0700); returns it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


class WriteFailed(OSError):
    """A write that failed, naming the file: ``str()`` is the message alone (no
    "[Errno N]" prefix), ``errno`` is kept."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class OutputLocked(RuntimeError):
    """Another live process writes this output."""


class OutputLock:
    """Exclusive ownership of ``target`` (a file or folder) by this process, through
    ``<target>.lock`` (a folder's lock is ``<folder>/.lock``). Use as a context
    manager or ``acquire()`` / ``release()``. `notice` gets the one line said when a
    stale lock of a dead process is taken over (default: stderr)."""

    def __init__(self, target: str | Path, notice: Notice | None = None) -> None:
        target = Path(target)
        self.target = target
        self.path = target / LOCK_SUFFIX if target.is_dir() else target.with_name(target.name + LOCK_SUFFIX)
        self._notice = notice or _stderr
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        if self._fd is not None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise OutputLocked(f"{self.target} is being written by another process ({owner}): "
                                   "wait for it to finish or stop it") from None
            except BaseException:
                os.close(fd)
                raise
            # the file may have been removed by its releasing owner after we opened it
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        before = _read_owner(fd)
        if before:
            self._notice(f"note: took over the lock of {self.target} from a process that is gone ({before})")
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode() + b"\n", 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # unlink while holding: no one can take a dead inode
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_owner(fd: int) -> str:
    """The owner line of a lock file as ``pid N on HOST since T``, or '' when empty."""
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if not raw:
            return ""
        o = json.loads(raw)
        return f"pid {o.get('pid')} on {o.get('host')} since {o.get('since')}"
    except (OSError, ValueError, AttributeError):
        return "unknown owner"


def repair_tail(path: str | Path, notice: Notice | None = None) -> int:
    """Cut a last line without its newline off ``path``; the cut bytes are appended to
    ``path.torn`` (0600) and `notice` says so. Returns the number of bytes cut."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep, pos = 0, size
        while pos > 0:
            start = max(0, pos - READ_CHUNK)
            f.seek(start)
            nl = f.read(pos - start).rfind(b"\n")
            if nl != -1:
                keep = start + nl + 1
                break
            pos = start
        f.seek(keep)
        torn = f.read()
        torn_path = path.with_name(path.name + TORN_SUFFIX)
        fd = os.open(torn_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            _write_all(fd, torn + b"\n", torn_path)
        finally:
            os.close(fd)
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    (notice or _stderr)(f"note: {path} ended in a torn line ({len(torn)} bytes, a write cut short): "
                        f"kept aside in {torn_path}")
    return len(torn)


def _write_all(fd: int, data: bytes, path: Path) -> None:
    """Write every byte of ``data`` to ``fd`` and fsync; OSError names ``path``."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as e:
        raise WriteFailed(e.errno, f"could not write {path}: {e.strerror or e}") from e


class AppendFile:
    """One process's append-only text file of whole lines. Thread-safe.

    Opening takes the file's `OutputLock` (unless ``lock=False``: the caller holds a
    lock on the folder), repairs a torn tail, and opens with ``O_APPEND`` (0600).
    `append` writes one line whole and fsyncs before returning."""

    def __init__(self, path: str | Path, lock: bool = True, notice: Notice | None = None) -> None:
        self.path = Path(path)
        self._lock = OutputLock(self.path, notice).acquire() if lock else None
        try:
            repair_tail(self.path, notice)
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        self._mutex = threading.Lock()

    def append(self, line: str) -> None:
        """``line`` (a newline is added when missing) written whole and fsynced."""
        data = (line if line.endswith("\n") else line + "\n").encode("utf-8")
        with self._mutex:
            if self._fd is None:
                raise WriteFailed(errno.EBADF, f"could not write {self.path}: it is closed")
            start = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                _write_all(self._fd, data, self.path)
            except OSError:
                try:  # a full disk took part of the line: cut it, leave no torn line
                    os.ftruncate(self._fd, start)
                except OSError:
                    pass
                raise

    def append_json(self, obj, **kw) -> None:
        """``obj`` as one compact JSON line (``kw`` to ``json.dumps``)."""
        self.append(json.dumps(obj, ensure_ascii=False, **kw))

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> "AppendFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def lock_holder(target: str | Path) -> str | None:
    """Who holds ``target``'s `OutputLock` (``pid N on HOST since T``) while a live
    process does, else None (no lock file, or one left by a dead process). Read-only:
    nothing is created, changed or taken over, so a reader (``curate merge``) can check
    that no one still writes its inputs. (Its brief shared flock can make a writer
    starting in that instant be refused; it then says so and can be rerun.)"""
    path = OutputLock(target).path
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_owner(fd) or "unknown owner"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
