"""Files written whole or not at all, their sums, and durable renames.

Every file frakti-install puts in place (a config file, a verified binary,
a cache entry, a bundle) is written to a temporary file in the target's own
directory, flushed and fsynced, given its mode, renamed over the target with
os.replace and made durable by an fsync of the directory. A failure at any
point leaves the old file (or nothing) at the target and no temporary file.

Stdlib only, so it costs nothing at start-up (unlike frakti_install.download,
which imports requests).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator, Optional, Union

__all__ = [
    "CHUNK_SIZE",
    "atomic_write",
    "exchange",
    "fsync_dir",
    "move_into_place",
    "sha256_of",
    "staged",
]

CHUNK_SIZE = 1 << 20  # 1 MiB: what is read, hashed or copied per step

PathLike = Union[str, "os.PathLike[str]"]


def sha256_of(path: PathLike) -> str:
    """Hex sha256 of a file, read CHUNK_SIZE at a time (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: PathLike) -> None:
    """Make the entries of a directory (a rename into it) durable.

    Best effort: a directory that cannot be opened, or a filesystem that
    refuses fsync on a directory (some network and FUSE filesystems do), is
    not an error.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged(path: PathLike, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """An open temporary file that replaces ``path`` when the block ends.

    Yields a binary file opened in path's directory (which must exist). When
    the block ends without an exception, the file is flushed, given ``mode``,
    fsynced, renamed onto ``path`` (os.replace) and the directory fsynced.
    When it raises, the temporary file is removed, ``path`` is left as it
    was and the exception propagates. Code in the block runs between the
    write and the rename: Host backs up the file it replaces there.
    """
    target = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write(
    path: PathLike,
    data: Optional[bytes] = None,
    *,
    source: Optional[PathLike] = None,
    mode: int = 0o644,
) -> None:
    """Atomically put ``data``, or a copy of the file ``source``, at ``path``.

    Exactly one of data and source (TypeError otherwise). The copy is
    streamed CHUNK_SIZE at a time. OSError (disk full, permissions, a
    missing source...) propagates with path unchanged and no temporary file.
    """
    if (data is None) == (source is None):
        raise TypeError("atomic_write needs exactly one of data and source")
    with staged(path, mode) as out:
        if data is not None:
            out.write(data)
        else:
            assert source is not None
            with open(source, "rb") as src:
                shutil.copyfileobj(src, out, CHUNK_SIZE)


def move_into_place(source: PathLike, path: PathLike, *, mode: int = 0o644) -> None:
    """Durably rename an already-written file onto ``path`` (same filesystem).

    Its data is fsynced, it gets ``mode``, os.replace puts it at path, and
    both directories are fsynced. Raises OSError; on failure ``source`` is
    left where it is (the caller decides whether to keep it: a finished
    download's .part file is reused by the next run).
    """
    src, dst = Path(source), Path(path)
    with open(src, "rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(src, mode)
    os.replace(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


AT_FDCWD = -100
RENAME_EXCHANGE = 1 << 1  # linux/fs.h


def exchange(first: PathLike, second: PathLike) -> bool:
    """Swap two directory entries in one step (renameat2 with RENAME_EXCHANGE):
    neither name is ever missing. False, with nothing changed, where the C
    library, the kernel or the filesystem cannot (then the caller renames twice)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    first_b, second_b = os.fsencode(os.fspath(first)), os.fsencode(os.fspath(second))
    if renameat2(AT_FDCWD, first_b, AT_FDCWD, second_b, RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), os.fspath(first), os.fspath(second))
