"""Tarballs we did not make: only what is safe to install comes out of them.

One rule book, :func:`select_members`, for the two shapes frakti-install
unpacks, and :func:`safe_members`, which applies it to an archive file:

* a flat set of files (crictl, the CNI plugins): regular files picked by
  base name, installed side by side in one directory; links, devices and
  the rest of the archive are ignored.
* a tree under a prefix (the kata release under /opt/kata): regular files,
  and symlinks that stay inside the prefix (also when followed through the
  archive's other links); directories are made as needed. Anything else --
  an absolute path, ``..``, a device, a FIFO, a hard link, a member outside
  the prefix, a file or link below one of the archive's links -- refuses
  the whole archive before anything is written.

Where the Python has tarfile's extraction filters (3.8.17, 3.9.17, 3.10.12,
3.11.4, 3.12 and later), ``tarfile.data_filter`` checks every selected
member too, as a second line of defence.

Archives are read as streams, so a 300 MB tarball costs no memory: gzip, xz,
bzip2 and plain tar through tarfile, zstd (detected by its magic bytes, not
the file name) through the ``zstandard`` library, imported only then.
Stdlib only otherwise.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from frakti_install.errors import ExitCode, FraktiInstallError

__all__ = [
    "READ_ERRORS",
    "ZSTD_MAGIC",
    "DamagedArchive",
    "Member",
    "Selection",
    "UnsafeArchive",
    "data_filter_refusal",
    "open_stream",
    "safe_members",
    "select_members",
]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# What reading a damaged archive from open_stream() can raise.
READ_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)
_MAX_LINK_HOPS = 40  # like the kernel's limit on nested symlinks
_BUFSIZE = 1 << 20

PathLike = Union[str, "os.PathLike[str]"]


class UnsafeArchive(FraktiInstallError):
    """An archive holds something that must not be unpacked (nothing was installed)."""

    exit_code = ExitCode.CHECKSUM


class DamagedArchive(UnsafeArchive):
    """An archive that cannot be read (truncated, not a tarball, bad compression)."""


@dataclass(frozen=True)
class Member:
    """A regular file to install."""

    info: tarfile.TarInfo
    # tree shape: the absolute path it goes to ("/opt/kata/bin/kata-runtime");
    # flat shape: its base name ("crictl"), to install in the caller's directory
    target: str


@dataclass(frozen=True)
class Selection:
    """What :func:`safe_members` found safe in an archive file."""

    path: Path
    files: Tuple[Member, ...]  # flat shape: in the order of the names asked for
    links: Dict[str, str] = field(default_factory=dict)  # tree shape: target -> link text

    def read(self) -> Iterator[Tuple[Member, IO[bytes]]]:
        """Each selected file with its content, in archive order, in one streaming pass.

        Read each file object before asking for the next one (the archive is a
        stream). Raises DamagedArchive if the archive cannot be read, or is not
        the one the selection was made from.
        """
        wanted: Dict[int, List[Member]] = {}
        for member in self.files:
            wanted.setdefault(member.info.offset, []).append(member)
        seen = set()
        try:
            with open_stream(self.path) as tar:
                for info in tar:
                    chosen = wanted.get(info.offset)
                    if not chosen or info.offset in seen:
                        continue
                    if _header(info) != _header(chosen[0].info):
                        raise DamagedArchive(
                            f"the archive {self.path} changed while it was read; "
                            "nothing more installed"
                        )
                    seen.add(info.offset)
                    data = tar.extractfile(info)
                    assert data is not None, info.name  # a regular file has content
                    with data:
                        for member in chosen:
                            yield member, data
        except READ_ERRORS as exc:
            raise _damaged(self.path, exc) from None
        if len(seen) != len(wanted):
            raise DamagedArchive(
                f"the archive {self.path} changed while it was read; nothing more installed"
            )


def _header(info: tarfile.TarInfo) -> Tuple[str, bytes, str, int]:
    return info.name, info.type, info.linkname, info.size


def _damaged(path: PathLike, exc: BaseException) -> DamagedArchive:
    return DamagedArchive(
        f"cannot read the archive {path}: {exc}; nothing installed",
        hint="The file is damaged or not a tarball; delete it from the cache and run again.",
    )


# --------------------------------------------------------------------------- reading


class _ZstdStream:
    """A zstd-decompressing reader whose errors are OSErrors (as gzip's and lzma's are)."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard  # only when a .tar.zst is read

        self._error = zstandard.ZstdError
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=_BUFSIZE, read_across_frames=True
        )

    def read(self, size: int = -1) -> bytes:
        try:
            return bytes(self._reader.read(size))
        except self._error as exc:
            raise OSError(f"zstd: {exc}") from None

    def close(self) -> None:
        self._reader.close()


@contextlib.contextmanager
def open_stream(path: PathLike) -> Iterator[tarfile.TarFile]:
    """The archive as a streaming TarFile (mode "r|"): iterate it once, in order.

    The compression (gzip, xz, bzip2, zstd or none) is told by the first
    bytes. Reading a damaged archive raises one of READ_ERRORS.
    """
    with open(path, "rb") as raw:
        magic = raw.read(len(ZSTD_MAGIC))
        raw.seek(0)
        if magic == ZSTD_MAGIC:
            stream = _ZstdStream(raw)
            try:
                with tarfile.open(
                    fileobj=stream, mode="r|", bufsize=_BUFSIZE  # type: ignore[call-overload]
                ) as tar:
                    yield tar
            finally:
                stream.close()
        else:
            with tarfile.open(fileobj=raw, mode="r|*", bufsize=_BUFSIZE) as tar:
                yield tar


# --------------------------------------------------------------------------- the rules


def _parts(name: str) -> List[str]:
    return [part for part in name.split("/") if part not in ("", ".")]


def _flat(
    infos: Iterable[tarfile.TarInfo], names: Sequence[str], archive: str
) -> List[Member]:
    files = [info for info in infos if info.isfile()]
    by_name = {posixpath.basename(info.name): info for info in files}
    if names:
        missing = [name for name in names if name not in by_name]
        if missing:
            raise FraktiInstallError(f"archive {archive!r} has no {', '.join(missing)}")
        chosen = [by_name[name] for name in names]
    else:  # every regular file at the top level
        chosen = [info for info in files if info.name.lstrip("./").count("/") == 0]
    for info in chosen:
        if posixpath.basename(info.name) in ("", ".", ".."):
            raise UnsafeArchive(f"archive member {info.name!r} has no file name; nothing installed")
    return [Member(info, posixpath.basename(info.name)) for info in chosen]


def _tree(
    infos: Iterable[tarfile.TarInfo], prefix: str
) -> Tuple[List[Member], Dict[str, str]]:
    root = prefix.strip("/")
    top = "/" + root
    files: List[Member] = []
    links: Dict[str, str] = {}
    named: List[Tuple[tarfile.TarInfo, str]] = []  # (member, target) of files and links
    for info in infos:
        parts = _parts(info.name)
        if not parts:
            continue  # "." or "./"
        if info.name.startswith("/") or ".." in parts:
            raise UnsafeArchive(f"archive member {info.name!r} leaves the tree; nothing installed")
        name = "/".join(parts)
        inside = name == root or name.startswith(root + "/")
        if info.isdir() and (inside or root.startswith(name + "/")):
            continue
        if not inside or name == root:
            raise UnsafeArchive(
                f"archive member {info.name!r} is outside ./{root}; nothing installed"
            )
        target = "/" + name
        if info.isreg():
            files.append(Member(info, target))
        elif info.issym():
            link = info.linkname
            resolved = posixpath.normpath(
                link if link.startswith("/") else posixpath.join(posixpath.dirname(target), link)
            )
            if not resolved.startswith(top + "/"):
                raise UnsafeArchive(
                    f"archive link {info.name!r} points outside {prefix} ({link}); "
                    "nothing installed"
                )
            links[target] = link
        else:
            raise UnsafeArchive(
                f"archive member {info.name!r} is neither a file, a directory nor a link "
                "inside the tree; nothing installed"
            )
        named.append((info, target))
    # Nothing is written through a link: no file or link below one of the
    # archive's links (ln and the installer would follow it).
    for info, target in named:
        parent = posixpath.dirname(target)
        while parent.startswith(top + "/"):
            if parent in links:
                what = "file" if info.isreg() else "link"
                raise UnsafeArchive(
                    f"archive {what} {info.name!r} lies below the link {parent}; "
                    "nothing installed"
                )
            parent = posixpath.dirname(parent)
    # Followed the way the kernel will (through the archive's other links, where
    # ".." after a link is taken from the link's target), each link stays inside.
    for target, link in links.items():
        end = _follow(target, links)
        if end is None or not end.startswith(top + "/"):
            info = next(i for i, t in named if t == target)
            how = "loops" if end is None else f"leads to {end} through other links"
            raise UnsafeArchive(
                f"archive link {info.name!r} points outside {prefix} ({link}: {how}); "
                "nothing installed"
            )
    return files, links


def _follow(link: str, links: Dict[str, str]) -> Optional[str]:
    """Where the link at path ``link`` ends, following ``links``; None for a loop."""
    pending = _parts(links[link])
    resolved = "/" if links[link].startswith("/") else posixpath.dirname(link)
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            resolved = posixpath.dirname(resolved)
            continue
        candidate = posixpath.join(resolved, part)
        text = links.get(candidate)
        if text is None:
            resolved = candidate
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS:
            return None
        pending = _parts(text) + pending
        if text.startswith("/"):
            resolved = "/"
    return resolved


def data_filter_refusal(info: tarfile.TarInfo, dest: PathLike) -> Optional[str]:
    """Why ``tarfile.data_filter`` refuses to extract ``info`` into ``dest`` (None: it
    accepts it, or this Python has no extraction filters)."""
    check = getattr(tarfile, "data_filter", None)
    if check is None:
        return None
    try:
        check(info, os.fspath(dest))
    except tarfile.FilterError as exc:
        return str(exc)
    return None


def _second_line(members: Iterable[Tuple[tarfile.TarInfo, Optional[str]]]) -> None:
    """tarfile's data filter over the selected members (link: its relative text)."""
    if not hasattr(tarfile, "data_filter"):
        return
    with tempfile.TemporaryDirectory(prefix="frakti-tar-") as dest:  # empty: nothing resolves
        for info, link in members:
            checked = info
            if link is not None:
                checked = info.replace(linkname=link, deep=False)
            why = data_filter_refusal(checked, dest)
            if why is not None:
                raise UnsafeArchive(
                    f"archive member {info.name!r} is refused by tarfile's data filter "
                    f"({why}); nothing installed"
                )


def select_members(
    infos: Iterable[tarfile.TarInfo],
    *,
    prefix: Optional[str] = None,
    names: Sequence[str] = (),
    archive: str = "archive",
) -> Tuple[List[Member], Dict[str, str]]:
    """The files (and links) to install from these headers, or an error; writes nothing.

    ``prefix`` given: the tree shape (files' targets are absolute paths, links
    map a target to its link text); raises UnsafeArchive. ``names`` cannot be
    combined with it.

    No prefix: the flat shape, the regular files with these base names
    (anywhere in the archive), or with no names every regular file at the top
    level; links is empty. Raises FraktiInstallError "archive '<archive>' has
    no <names>" for names it lacks, UnsafeArchive for a selected member the
    data filter refuses.
    """
    infos = list(infos)
    if prefix is not None:
        if names:
            raise TypeError("select_members: names apply to the flat shape only (no prefix)")
        if not prefix.strip("/"):
            raise ValueError("select_members: the prefix must be a directory below /")
        files, links = _tree(infos, prefix)
        checked: List[Tuple[tarfile.TarInfo, Optional[str]]] = [(m.info, None) for m in files]
        by_target = {"/" + "/".join(_parts(i.name)): i for i in infos if i.issym()}
        for target, link in links.items():
            relative = link
            if link.startswith("/"):
                relative = posixpath.relpath(link, posixpath.dirname(target))
            checked.append((by_target[target], relative))
        _second_line(checked)
        return files, links
    files = _flat(infos, names, archive)
    _second_line((m.info, None) for m in files)
    return files, {}


def safe_members(
    path: PathLike, *, prefix: Optional[str] = None, names: Sequence[str] = ()
) -> Selection:
    """Check a whole archive file, then say what to install from it.

    Reads the archive's headers in one streaming pass and applies
    :func:`select_members` (see there for the two shapes and their errors);
    nothing is written, and an unsafe archive is refused before any of it is
    installed. A damaged archive raises DamagedArchive (an UnsafeArchive).
    ``Selection.read()`` then streams the selected files' contents.
    """
    archive = Path(path)
    try:
        with open_stream(archive) as tar:
            infos = list(tar)
    except READ_ERRORS as exc:
        raise _damaged(archive, exc) from None
    files, links = select_members(
        infos, prefix=prefix, names=names, archive=os.path.abspath(archive)
    )
    return Selection(archive, tuple(files), links)
