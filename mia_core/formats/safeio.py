"""Durable file writes: the one atomic-write helper, fsync, one-line disk errors and the
test-only fault hooks.

Every file mia writes whole (a run's compacted HDF5 file, scores, attack results) goes
through :func:`write_atomically`: the bytes go to a hidden temporary name in the same
folder, are fsynced, and only then take the final name with ``os.replace`` (or, when
nothing may be overwritten, ``os.link``), after which the folder is fsynced. A kill at any
instant leaves either the old file or the new one, never a mix; a stray temporary file of
a killed process is removed by the next write of the same file.

HDF5 files are built in memory (``h5py.File`` on a ``BytesIO``) and written with
:func:`write_atomically`, so a full disk or a read-only folder is met by plain ``os.write``
calls that raise ``OSError`` (turned into one line by :func:`disk_error`), never inside
the HDF5 library.

Fault hooks (tests only; no effect unless set): ``MIA_FAULT_KILL_AT=k`` makes the process
SIGKILL itself at its k-th durable step (a write, half a journal record, an fsync, a
rename), ``MIA_FAULT_ENOSPC_AT=k`` makes the k-th step and every later one fail with
ENOSPC, ``MIA_FAULT_LOG=FILE`` appends one line per step (to size a sweep over k) and
``MIA_FAULT_NO_FSYNC=1`` counts fsyncs without doing them (a SIGKILL loses no page cache).
"""

from __future__ import annotations

import errno
import io
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mia_core.errors import DiskError
from mia_core.formats.integrity import USERBLOCK_SIZE, seal_image

FAULT_KILL_ENV = "MIA_FAULT_KILL_AT"
FAULT_ENOSPC_ENV = "MIA_FAULT_ENOSPC_AT"
FAULT_LOG_ENV = "MIA_FAULT_LOG"
FAULT_NO_FSYNC_ENV = "MIA_FAULT_NO_FSYNC"
TMP_SUFFIX = ".tmp"

_steps = 0


def step(what: str) -> None:
    """One durable step is about to happen: where the fault hooks kill or fail (no-op unless set)."""
    global _steps
    kill_at, enospc_at, log = (os.environ.get(FAULT_KILL_ENV), os.environ.get(FAULT_ENOSPC_ENV),
                               os.environ.get(FAULT_LOG_ENV))
    if not (kill_at or enospc_at or log):
        return
    _steps += 1
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{_steps} {what}\n")
    if kill_at and _steps == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
    if enospc_at and _steps >= int(enospc_at):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def write_all(fd: int, data: bytes, what: str = "write") -> None:
    """``os.write`` until every byte is written; in two halves, each a step, so a fault
    (or a test kill) can land in the middle of a record."""
    view = memoryview(data)
    half = len(view) // 2
    for part in (view[:half], view[half:]) if half else (view,):
        step(what)
        while part:
            written = os.write(fd, part)
            part = part[written:]


def fsync(fd: int) -> None:
    step("fsync")
    if os.environ.get(FAULT_NO_FSYNC_ENV):  # kill tests: a killed process loses no page cache, so
        return  # fsync only matters for power loss; skipping it keeps hundreds of trials fast
    os.fsync(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new name in ``folder`` durable (not possible on every OS: then skipped)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        fsync(fd)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            return
        raise
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def is_temporary(name: str, of: str) -> bool:
    """Whether the file name ``name`` is a temporary file of :func:`write_atomically` writing ``of``."""
    prefix = f".{of}."
    return name.startswith(prefix) and name.endswith(TMP_SUFFIX) and name[len(prefix):-len(TMP_SUFFIX)].isdigit()


def remove_stale_temps(path: Path) -> int:
    """Remove the temporary files of ``path`` left by killed processes (their pid no longer runs);
    returns how many were removed."""
    prefix = f".{path.name}."
    removed = 0
    try:
        names = os.listdir(path.parent)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TMP_SUFFIX)):
            continue
        pid = name[len(prefix):-len(TMP_SUFFIX)]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            try:
                os.unlink(path.parent / name)
                removed += 1
            except OSError:
                pass
    return removed


def remove_stale_temps_in(folder: Path) -> int:
    """:func:`remove_stale_temps` of every file of ``folder`` (files written under new names each time, whose
    killed writers' temporary files no later write of the same name would find)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    owners = {name[1:].rsplit(".", 2)[0] for name in names if name.startswith(".") and name.endswith(TMP_SUFFIX)}
    return sum(remove_stale_temps(Path(folder) / owner) for owner in owners)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a temporary file of a dead writer may be removed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_atomically(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` as the file ``path``: temporary name, fsync, rename, fsync of the folder.

    With ``overwrite=False`` an existing ``path`` is never replaced (``FileExistsError``).
    On any failure the temporary file is removed and ``path`` is as it was. ``OSError``
    is raised as is; callers turn it into one line with :func:`disk_error`.
    """
    return _write_atomically(Path(path), lambda fd: write_all(fd, data), overwrite)


@contextmanager
def open_atomically(path: str | os.PathLike, overwrite: bool = True, binary: bool = False) -> Iterator[IO[Any]]:
    """A text file (UTF-8; bytes with ``binary``) written as a stream to a temporary name beside ``path``
    (nothing held in memory: exports of any size) and given the name ``path`` only once whole; same
    guarantees as :func:`write_atomically` (a failure or an interrupt removes the temporary file)."""
    path = Path(path)
    remove_stale_temps(path)
    tmp = _temp_name(path)
    stream = (open(tmp, "wb") if binary  # noqa: SIM115 -- closed below on every path
              else open(tmp, "w", encoding="utf-8", newline=""))
    try:
        yield stream
        stream.flush()
        fsync(stream.fileno())
        stream.close()
        _publish(tmp, path, overwrite)
    except BaseException:
        stream.close()
        tmp.unlink(missing_ok=True)
        raise


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Give the whole, fsynced ``tmp`` the name ``path`` (never over an existing file unless
    ``overwrite``) and make the new name durable."""
    step("rename")
    if overwrite:
        os.replace(tmp, path)
    else:
        _link_new(tmp, path)
    fsync_dir(path.parent)


def _write_atomically(path: Path, write: Callable[[int], None], overwrite: bool) -> Path:
    remove_stale_temps(path)
    tmp = _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write(fd)
            fsync(fd)
        finally:
            os.close(fd)
        _publish(tmp, path, overwrite)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    return path


def _link_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if nothing has it (atomic where hard links work)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:  # a file system without hard links: check, then rename
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def hdf5_image(fill: Callable[[Any], None]) -> bytes:
    """The bytes of an HDF5 file built in memory by ``fill(h5py_file)``, sealed with its checksum
    (``formats.integrity``: verified before any later read lets libhdf5 near the bytes)."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=USERBLOCK_SIZE) as f:
        fill(f)
    return seal_image(buffer.getvalue())


def write_hdf5_atomically(path: str | os.PathLike, fill: Callable[[Any], None], overwrite: bool = True) -> Path:
    """An HDF5 file built by ``fill(h5py_file)`` in memory, then written with :func:`write_atomically`."""
    return write_atomically(path, hdf5_image(fill), overwrite=overwrite)


#: Raw-chunk cache of each dataset of a streamed file (HDF5's default is 1 MiB): its writer fills chunks in
#: order, so a chunk is rarely written twice, and a large cache only holds memory (about 7 MB of a compaction's peak
#: at 10^6 rows, docs/scale.md).
STREAMED_CHUNK_CACHE = 256 * 2**10


def write_hdf5_streamed(path: str | os.PathLike, fill: Callable[[Any], None], overwrite: bool = True) -> Path:
    """An HDF5 file built by ``fill(h5py_file)`` straight into a temporary file beside ``path`` (a
    :class:`GuardedFile`: a full disk never reaches HDF5), sealed with its checksum, fsynced and renamed
    over ``path`` (linked, never over an existing file, unless ``overwrite``): the guarantees of
    :func:`write_atomically` without holding the file in memory (a run's compaction, whatever the run's size).
    ``OSError`` is raised as is."""
    import h5py

    from mia_core.formats.integrity import USERBLOCK_SIZE, cap_metadata_cache, seal_file

    path = Path(path)
    remove_stale_temps(path)
    tmp = _temp_name(path)
    guard = GuardedFile(tmp, "w+b")
    try:
        with h5py.File(guard, "w", userblock_size=USERBLOCK_SIZE, rdcc_nbytes=STREAMED_CHUNK_CACHE) as f:
            cap_metadata_cache(f)
            fill(f)
        _raise_recorded(guard)
        seal_file(guard)
        guard.sync()
        guard.close()
        _raise_recorded(guard)  # after close too: an interrupt during its flush is kept, not lost
        _publish(tmp, path, overwrite)
    except BaseException:
        guard.close()
        tmp.unlink(missing_ok=True)
        raise
    return path


def disk_error(exc: OSError, path: str | os.PathLike, kept: str = "") -> DiskError:
    """One line for a failed write: ``no space left on device writing PATH``, a read-only
    folder, a missing permission, or the system's own reason. ``kept`` is appended (what
    was saved and how to continue)."""
    code = exc.errno
    if code == errno.ENOSPC:
        text = f"no space left on device writing {path}"
    elif code == errno.EDQUOT:
        text = f"disk quota exceeded writing {path}"
    elif code == errno.EROFS:
        text = f"cannot write {path}: the file system is read-only"
    elif code in (errno.EACCES, errno.EPERM):
        text = f"cannot write {path}: permission denied"
    elif code == errno.ENAMETOOLONG:
        text = f"cannot write {path}: file name too long"
    else:
        text = f"cannot write {path}: {exc.strerror or exc}"
    return DiskError(text + (f"; {kept}" if kept else ""))


def is_disk_error(exc: BaseException) -> bool:
    """An OSError of the kind :func:`disk_error` describes (HDF5 wraps some as plain OSError text)."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG):
        return True
    text = str(exc).lower()
    return "no space left" in text or "read-only file system" in text or "file name too long" in text


class GuardedFile(io.FileIO):
    """A file for h5py's file-object driver that keeps failures away from HDF5.

    HDF5 meeting a full disk mid-file can end in a segmentation fault on close (observed
    with ``mia prefix`` on a full tmpfs), and so can a Python exception (Ctrl-C's
    KeyboardInterrupt, SIGTERM's SystemExit) raised inside the driver's callbacks. Here no
    exception ever reaches HDF5: a failed write is recorded in ``error`` and reported to
    HDF5 as done; an interrupt is recorded in ``interrupted`` and the operation finished.
    The writer calls :meth:`raise_if_failed` after each batch, which raises either, and
    then deletes the half-written file.
    """

    error: OSError | None = None
    interrupted: BaseException | None = None

    def _finish(self, operation: Callable[[], Any]) -> Any:
        while True:  # an interrupt inside the operation is kept for later; the operation completes
            try:
                return operation()
            except (KeyboardInterrupt, SystemExit) as exc:
                self.interrupted = self.interrupted or exc

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")

        def write_all_bytes() -> None:
            done = 0
            while done < len(view):
                done += super(GuardedFile, self).write(view[done:])

        if self.error is None:
            try:
                self._finish(lambda: step("hdf5 write"))
                self._finish(write_all_bytes)
            except OSError as exc:
                self.error = exc
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self._finish(lambda: super(GuardedFile, self).truncate(size))
            except OSError as exc:
                self.error = exc
        return size or 0

    def readinto(self, buffer: Any) -> int:
        return self._finish(lambda: super(GuardedFile, self).readinto(buffer))

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._finish(lambda: super(GuardedFile, self).seek(offset, whence))

    def tell(self) -> int:
        return self._finish(lambda: super(GuardedFile, self).tell())

    def flush(self) -> None:
        try:
            self._finish(lambda: super(GuardedFile, self).flush())
        except OSError as exc:
            self.error = self.error or exc

    def sync(self) -> None:
        """fsync the file, recording a failure like a write's."""
        if self.error is None:
            try:
                self._finish(lambda: fsync(self.fileno()))
            except OSError as exc:
                self.error = exc

    def raise_if_failed(self, path: str | os.PathLike, kept: str = "") -> None:
        if self.interrupted is not None:
            raise self.interrupted
        if self.error is not None:
            raise disk_error(self.error, path, kept)


def _raise_recorded(guard: GuardedFile) -> None:
    """The interrupt or the write failure a GuardedFile kept from HDF5, raised now (the OSError as is)."""
    if guard.interrupted is not None:
        raise guard.interrupted
    if guard.error is not None:
        raise guard.error
