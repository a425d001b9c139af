"""The checksum every HDF5 file mia writes carries, and the one way mia opens an HDF5 file to read it.

libhdf5 trusts the bytes it reads: a flipped bit in a heap or a B-tree can make it raise
anything, return wrong strings, or loop for ever inside a C call that no Python code can
interrupt. So libhdf5 never sees bytes that were not checked first:

- Every HDF5 file mia writes starts with a 512-byte HDF5 *user block* (``userblock_size=512``,
  which HDF5 itself skips) holding ``mia-sha256 <hex digest> <length>``: the SHA-256 of the bytes
  after the block and their count. It is written once the file is whole (:func:`seal_image` for
  files built in memory, :func:`seal_file` for the streamed prefix map), so every writer that
  rewrites a file (a run's compaction, a rescoring) seals the new bytes.
- :func:`open_hdf5` verifies that checksum in pure Python *before* h5py opens the file, once per
  process for a given file version (path, inode, size, mtime): one sequential read of the file,
  at a few hundred MB/s. A mismatch, a torn header or a truncated file is :class:`DamagedFile`
  (``damaged HDF5 file X: …``, exit 1) and libhdf5 is never called on it.
- Any exception h5py or numpy raises while a mia file is read inside ``open_hdf5`` becomes the same
  one line naming the file: the one translation point.

Files written by an older mia (no user block: the HDF5 signature is at offset 0) still open
without the checksum; they are not protected against a hang inside libhdf5 (docs/report.md).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mia_core.errors import MiaError
from mia_core.formats.sniff import describe_file

USERBLOCK_SIZE = 512
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAGIC = b"mia-sha256 "
#: Bytes hashed at a time, read into one reused buffer (a digest of a file of any size holds this much).
_READ_CHUNK = 1 << 20

#: Exceptions h5py and numpy raise on a damaged file (or on one that is not what it claims to be).
READ_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError, IndexError, OverflowError, AttributeError,
               MemoryError, EOFError)

_verified: dict[str, tuple[int, int, int, int]] = {}


class DamagedFile(MiaError):
    """A file mia cannot trust: ``damaged HDF5 file X: why[; what to do]`` (exit 1)."""

    def __init__(self, path: str | os.PathLike, why: str, remedy: str = "") -> None:
        super().__init__(f"damaged HDF5 file {path}: {why}" + (f"; {remedy}" if remedy else ""))
        self.path = Path(path)
        self.why = why


class NotHDF5(MiaError):
    """A file that is neither a mia HDF5 file nor any HDF5 file (no signature where HDF5 puts one)."""


def _header(digest: str, length: int) -> bytes:
    text = MAGIC + f"{digest} {length}\n".encode("ascii")
    return text + bytes(USERBLOCK_SIZE - len(text))


def seal_image(image: bytes) -> bytes:
    """An HDF5 image built with ``userblock_size=USERBLOCK_SIZE``, with its checksum in the user block."""
    body = memoryview(image)[USERBLOCK_SIZE:]
    return _header(hashlib.sha256(body).hexdigest(), len(body)) + bytes(body)


def seal_file(fh: Any) -> None:
    """Write the checksum into the user block of the open, complete HDF5 file ``fh`` (read+write, binary)."""
    fh.seek(USERBLOCK_SIZE)
    digest, length = _digest(fh)
    fh.seek(0)
    fh.write(_header(digest, length))
    fh.flush()


def _digest(fh: Any) -> tuple[str, int]:
    sha, length = hashlib.sha256(), 0
    buffer = bytearray(_READ_CHUNK)
    view = memoryview(buffer)
    while n := fh.readinto(buffer):
        sha.update(view[:n])
        length += n
    return sha.hexdigest(), length


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a whole file (index shard files: recorded at build, checked on first use)."""
    with open(path, "rb") as fh:
        return _digest(fh)[0]


def _parse_header(block: bytes) -> tuple[str, int] | None:
    """(digest, length) from a user block, None when it is not a well-formed mia header."""
    if not block.startswith(MAGIC) or len(block) < USERBLOCK_SIZE:
        return None
    line, _, rest = block[len(MAGIC):].partition(b"\n")
    parts = line.split(b" ")
    if len(parts) != 2 or any(rest) or len(parts[0]) != 64 or not parts[1].isdigit():
        return None
    try:
        return parts[0].decode("ascii"), int(parts[1])
    except (UnicodeDecodeError, ValueError):
        return None


def verify(path: str | os.PathLike, remedy: str = "") -> bool:
    """Check the checksum of the HDF5 file ``path`` before libhdf5 reads it (once per file version
    and process). True when it matched, False for a file without one (an older mia's); a file that
    fails it is :class:`DamagedFile`; an unreadable one ``MiaError`` (a missing one ``FileNotFoundError``)."""
    p = Path(path)
    try:
        fh = open(p, "rb")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise MiaError(f"cannot read {p}: {exc.strerror or exc}") from None
    with fh:
        stat = os.fstat(fh.fileno())
        version = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        key = str(p.resolve())
        if _verified.get(key) == version:
            return True
        block = fh.read(USERBLOCK_SIZE)
        if block[:len(HDF5_SIGNATURE)] == HDF5_SIGNATURE:
            return False  # an older mia's file: no user block, nothing to check
        header = _parse_header(block)
        if header is None:
            if block.startswith(MAGIC[:4]) or fh.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                raise DamagedFile(p, "its checksum header is damaged", remedy)
            raise NotHDF5(f"{p} is not an HDF5 file: it is {describe_file(p)}, not a mia map, run, scores or "
                          "attack file")
        digest, length = _digest(fh)
    if length != header[1]:
        raise DamagedFile(p, f"{length} bytes after its header where {header[1]} were written (truncated or "
                             "extended)", remedy)
    if digest != header[0]:
        raise DamagedFile(p, "its SHA-256 checksum does not match its contents (bytes changed on disk)", remedy)
    _verified[key] = version
    return True


def describe_error(exc: BaseException) -> str:
    """An exception in a few words: its type and the first line of its message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def edit_hdf5(path: str | os.PathLike) -> Iterator[Any]:
    """``h5py.File(path, "r+")``, then the checksum sealed again: for tools and tests that change a mia file in
    place (mia's own writers rewrite files whole). A file without a user block (an older mia's) stays unsealed."""
    import h5py

    with h5py.File(path, "r+") as f:
        sealed = f.userblock_size >= USERBLOCK_SIZE
        yield f
    if sealed:
        with open(path, "r+b") as fh:
            seal_file(fh)


#: Ceiling of the metadata cache of a file mia opens. HDF5's default grows to 32 MiB as a large file's chunk
#: indexes and the global heaps of its strings are read, so a command's memory grew with the run it reads;
#: 512 KiB keeps it flat (a compaction at 10^6 rows: 81 MB with 2 MiB, 75 MB with 512 KiB or 256 KiB) at no
#: measured cost in speed (docs/scale.md).
METADATA_CACHE_BYTES = 2**19


def cap_metadata_cache(f: Any) -> None:
    """Cap the metadata cache of the open h5py file ``f`` at :data:`METADATA_CACHE_BYTES`."""
    config = f.id.get_mdc_config()
    config.max_size = METADATA_CACHE_BYTES
    config.min_size = min(config.min_size, METADATA_CACHE_BYTES)
    config.set_initial_size = True
    config.initial_size = min(config.initial_size, METADATA_CACHE_BYTES)
    f.id.set_mdc_config(config)


@contextmanager
def open_hdf5(path: str | os.PathLike, remedy: str = "") -> Iterator[Any]:
    """``h5py.File(path, "r")`` after :func:`verify`; any h5py/numpy exception raised while the file is
    open (or opening it) becomes one :class:`DamagedFile` line. ``MiaError`` passes through unchanged,
    so a reader can still say "not a run file" itself."""
    import h5py

    verify(path, remedy)
    try:
        with h5py.File(path, "r") as f:
            cap_metadata_cache(f)
            yield f
    except MiaError:
        raise
    except FileNotFoundError:
        raise
    except READ_ERRORS as exc:
        raise DamagedFile(path, describe_error(exc), remedy) from None
