"""fsio (atomic writes, sums, directory syncs) and tarsafe (what may come out of a tarball)."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import zstandard

from frakti_install import fsio, tarsafe
from frakti_install.errors import ExitCode, FraktiInstallError
from frakti_install.fsio import atomic_write, fsync_dir, move_into_place, sha256_of, staged
from frakti_install.tarsafe import DamagedArchive, UnsafeArchive, safe_members


def _leftovers(directory: Path, *keep: str) -> List[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_creates_with_mode_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    atomic_write(target, b"one", mode=0o600)
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    atomic_write(target, b"two", mode=0o755)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert _leftovers(tmp_path) == ["conf"]


def test_atomic_write_copies_a_source_file(tmp_path: Path) -> None:
    source = tmp_path / "download"
    source.write_bytes(os.urandom(3 * fsio.CHUNK_SIZE + 17))
    target = tmp_path / "bin" / "tool"
    target.parent.mkdir()
    atomic_write(target, source=source, mode=0o755)
    assert target.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    with pytest.raises(TypeError):
        atomic_write(target)
    with pytest.raises(TypeError):
        atomic_write(target, b"x", source=source)


class _FailingSource(io.RawIOBase):
    """Gives one chunk, then the disk 'fails'."""

    def __init__(self) -> None:
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self.reads += 1
        if self.reads > 1:
            raise OSError(errno.EIO, "Input/output error")
        buffer[:4] = b"half"
        return 4


def test_a_failure_midway_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "conf"
    atomic_write(target, b"old", mode=0o644)

    # the copy breaks after the first chunk was written to the temp file
    failing = _FailingSource()
    real_open = open

    def fake_open(path: object, *args: object, **kwargs: object) -> object:
        if path == tmp_path / "source":
            return io.BufferedReader(failing)
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write(target, source=tmp_path / "source", mode=0o755)
    monkeypatch.undo()
    assert failing.reads == 2, "the failure must come in the middle of the copy"
    assert target.read_bytes() == b"old"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert _leftovers(tmp_path) == ["conf"]

    # the rename itself fails (e.g. the target became a directory)
    def no_replace(src: object, dst: object) -> None:
        raise OSError(errno.EISDIR, "Is a directory")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError, match="Is a directory"):
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == ["conf"]

    # a missing source
    with pytest.raises(FileNotFoundError):
        atomic_write(target, source=tmp_path / "missing")
    assert _leftovers(tmp_path) == ["conf"]


def test_staged_runs_code_between_the_write_and_the_rename(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"old")
    with staged(target, 0o640) as out:
        out.write(b"new")
        # the old file is still in place here: Host backs it up now
        assert target.read_bytes() == b"old"
        (tmp_path / "backup").write_bytes(target.read_bytes())
        temps = _leftovers(tmp_path, "file", "backup")
        assert len(temps) == 1 and temps[0].startswith(".file.") and temps[0].endswith(".tmp")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert _leftovers(tmp_path) == ["backup", "file"]

    with pytest.raises(KeyboardInterrupt), staged(target) as out:
        out.write(b"partial")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"new"
    assert _leftovers(tmp_path) == ["backup", "file"]


def test_move_into_place_keeps_the_source_when_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "partial").mkdir()
    (tmp_path / "sha256").mkdir()
    part = tmp_path / "partial" / "x.part"
    part.write_bytes(b"payload")
    part.chmod(0o600)
    final = tmp_path / "sha256" / "x"

    monkeypatch.setattr(os, "replace", lambda s, d: (_ for _ in ()).throw(OSError("no")))
    with pytest.raises(OSError):
        move_into_place(part, final, mode=0o644)
    monkeypatch.undo()
    assert part.read_bytes() == b"payload" and not final.exists()

    move_into_place(part, final, mode=0o644)
    assert final.read_bytes() == b"payload" and not part.exists()
    assert stat.S_IMODE(final.stat().st_mode) == 0o644


def test_fsync_dir_tolerates_filesystems_that_refuse_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync_dir(tmp_path)  # the real thing
    fsync_dir(tmp_path / "missing")  # cannot be opened: not an error

    def refuse(fd: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "fsync", refuse)
    fsync_dir(tmp_path)


def test_sha256_of_matches_hashlib_on_a_multi_chunk_file(tmp_path: Path) -> None:
    data = os.urandom(fsio.CHUNK_SIZE * 2 + 12345)
    path = tmp_path / "big"
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_of(empty) == hashlib.sha256(b"").hexdigest()


# --------------------------------------------------------------------------- tarballs

PREFIX = "/opt/kata"


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o755
    return info


Entry = Tuple[tarfile.TarInfo, Optional[bytes]]


def _file(name: str, data: bytes = b"data") -> Entry:
    return _info(name), data


def _tarball(path: Path, entries: List[Entry]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _zstd(tar_gz: Path, out: Path) -> Path:
    import gzip

    with open(out, "wb") as dst:
        dst.write(zstandard.ZstdCompressor().compress(gzip.decompress(tar_gz.read_bytes())))
    return out


def _install(selection: tarsafe.Selection, dest: Path) -> Dict[str, bytes]:
    """What a caller does after safe_members said yes."""
    got: Dict[str, bytes] = {}
    for member, data in selection.read():
        local = dest / member.target.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data.read())
        got[member.target] = local.read_bytes()
    for link, text in selection.links.items():
        local = dest / link.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(text, local)
    return got


GOOD_TREE: List[Entry] = [
    (_info("./", tarfile.DIRTYPE), None),
    (_info("./opt", tarfile.DIRTYPE), None),
    (_info("./opt/kata", tarfile.DIRTYPE), None),
    (_info("./opt/kata/bin", tarfile.DIRTYPE), None),
    _file("./opt/kata/bin/kata-runtime", b"runtime"),
    _file("./opt/kata/bin/containerd-shim-kata-v2", b"shim"),
    _file("./opt/kata/share/kata-containers/vmlinux-6.1", b"kernel"),
    (_info("./opt/kata/share/kata-containers/vmlinux.container", tarfile.SYMTYPE,
           "vmlinux-6.1"), None),
    (_info("./opt/kata/bin/kata", tarfile.SYMTYPE, "/opt/kata/bin/kata-runtime"), None),
    (_info("./opt/kata/share/defaults", tarfile.SYMTYPE, "../share/kata-containers"), None),
]


def test_a_good_tree_with_internal_links_is_accepted(tmp_path: Path) -> None:
    archive = _tarball(tmp_path / "kata.tar.gz", GOOD_TREE)
    selection = safe_members(archive, prefix=PREFIX)
    assert [m.target for m in selection.files] == [
        "/opt/kata/bin/kata-runtime",
        "/opt/kata/bin/containerd-shim-kata-v2",
        "/opt/kata/share/kata-containers/vmlinux-6.1",
    ]
    assert selection.links == {
        "/opt/kata/share/kata-containers/vmlinux.container": "vmlinux-6.1",
        "/opt/kata/bin/kata": "/opt/kata/bin/kata-runtime",
        "/opt/kata/share/defaults": "../share/kata-containers",
    }
    dest = tmp_path / "root"
    assert _install(selection, dest) == {
        "/opt/kata/bin/kata-runtime": b"runtime",
        "/opt/kata/bin/containerd-shim-kata-v2": b"shim",
        "/opt/kata/share/kata-containers/vmlinux-6.1": b"kernel",
    }


def test_a_tar_zst_reads_the_same_as_the_tar_gz(tmp_path: Path) -> None:
    gz = _tarball(tmp_path / "kata.tar.gz", GOOD_TREE)
    zst = _zstd(gz, tmp_path / "kata-release.bin")  # told by its magic, not its name
    assert zst.read_bytes()[:4] == tarsafe.ZSTD_MAGIC
    from_gz, from_zst = (safe_members(p, prefix=PREFIX) for p in (gz, zst))
    assert [(m.target, m.info.size) for m in from_zst.files] == [
        (m.target, m.info.size) for m in from_gz.files
    ]
    assert from_zst.links == from_gz.links
    assert _install(from_zst, tmp_path / "a") == _install(from_gz, tmp_path / "b")
    flat_gz = safe_members(gz, names=["kata-runtime"])
    flat_zst = safe_members(zst, names=["kata-runtime"])
    assert [m.target for m in flat_zst.files] == [m.target for m in flat_gz.files]


def test_a_multi_frame_zstd_archive_is_read_to_its_end(tmp_path: Path) -> None:
    gz = _tarball(tmp_path / "t.tar.gz", GOOD_TREE)
    import gzip

    raw = gzip.decompress(gz.read_bytes())
    half = len(raw) // 2
    compressor = zstandard.ZstdCompressor()
    zst = tmp_path / "t.tar.zst"
    zst.write_bytes(compressor.compress(raw[:half]) + compressor.compress(raw[half:]))
    assert _install(safe_members(zst, prefix=PREFIX), tmp_path / "r")["/opt/kata/bin/kata-runtime"]


@pytest.mark.parametrize("entry, message", [
    (_file("/opt/kata/bin/evil"), "leaves the tree"),
    (_file("./opt/kata/../../etc/evil"), "leaves the tree"),
    ((_info("./opt/kata/dev", tarfile.CHRTYPE), None), "neither a file, a directory nor a link"),
    ((_info("./opt/kata/blk", tarfile.BLKTYPE), None), "neither a file, a directory nor a link"),
    ((_info("./opt/kata/fifo", tarfile.FIFOTYPE), None), "neither a file, a directory nor a link"),
    ((_info("./opt/kata/hard", tarfile.LNKTYPE, "opt/kata/bin/kata-runtime"), None),
     "neither a file, a directory nor a link"),
    ((_info("./opt/kata/bin/evil", tarfile.SYMTYPE, "/etc/shadow"), None),
     "points outside /opt/kata"),
    ((_info("./opt/kata/up", tarfile.SYMTYPE, "../../etc"), None), "points outside /opt/kata"),
    ((_info("./opt/kata/self", tarfile.SYMTYPE, "."), None), "points outside /opt/kata"),
    (_file("./etc/passwd"), "is outside ./opt/kata"),
    (_file("./opt/katamari"), "is outside ./opt/kata"),
    (_file("./opt/kata"), "is outside ./opt/kata"),
    ((_info("./usr", tarfile.DIRTYPE), None), "is outside ./opt/kata"),
], ids=["absolute", "dotdot", "device", "block-device", "fifo", "hardlink", "link-absolute-out",
        "link-relative-out", "link-to-prefix", "outside", "sibling-prefix", "prefix-as-file",
        "outside-dir"])
def test_unsafe_trees_are_refused_with_nothing_written(
    tmp_path: Path, entry: Entry, message: str
) -> None:
    archive = _tarball(tmp_path / "evil.tar.gz", [*GOOD_TREE, entry])
    with pytest.raises(UnsafeArchive, match=message) as info:
        safe_members(archive, prefix=PREFIX)
    assert repr(entry[0].name) in info.value.message
    assert info.value.message.endswith("nothing installed")
    assert info.value.exit_code == ExitCode.CHECKSUM
    assert _leftovers(tmp_path) == ["evil.tar.gz"], "a refused archive writes nothing"


def test_a_file_below_a_link_is_refused(tmp_path: Path) -> None:
    archive = _tarball(tmp_path / "evil.tar.gz", [
        (_info("./opt/kata/lib", tarfile.SYMTYPE, "bin"), None),
        _file("./opt/kata/lib/evil"),
    ])
    with pytest.raises(UnsafeArchive, match="lies below the link /opt/kata/lib"):
        safe_members(archive, prefix=PREFIX)
    # a link below a link is written through it as well
    archive = _tarball(tmp_path / "evil2.tar.gz", [
        (_info("./opt/kata/lib", tarfile.SYMTYPE, "bin"), None),
        (_info("./opt/kata/lib/l", tarfile.SYMTYPE, "../x"), None),
    ])
    with pytest.raises(UnsafeArchive, match="archive link './opt/kata/lib/l' lies below"):
        safe_members(archive, prefix=PREFIX)
    assert _leftovers(tmp_path) == ["evil.tar.gz", "evil2.tar.gz"]


def test_a_link_that_escapes_through_another_link_is_refused(tmp_path: Path) -> None:
    # Each looks inside on its own; followed as the kernel does, up leads to /kata/x.
    archive = _tarball(tmp_path / "evil.tar.gz", [
        (_info("./opt/kata/a/b/l", tarfile.SYMTYPE, "/opt/kata/t"), None),
        (_info("./opt/kata/a/b/up", tarfile.SYMTYPE, "l/../../../kata/x"), None),
    ])
    with pytest.raises(UnsafeArchive, match=r"points outside /opt/kata .*leads to /kata/x"):
        safe_members(archive, prefix=PREFIX)
    loop = _tarball(tmp_path / "loop.tar.gz", [
        (_info("./opt/kata/a", tarfile.SYMTYPE, "b"), None),
        (_info("./opt/kata/b", tarfile.SYMTYPE, "a"), None),
    ])
    with pytest.raises(UnsafeArchive, match="loops"):
        safe_members(loop, prefix=PREFIX)


def test_flat_shape_picks_regular_files_by_base_name(tmp_path: Path) -> None:
    archive = _tarball(tmp_path / "cni.tgz", [
        (_info("./", tarfile.DIRTYPE), None),
        _file("./bridge", b"bridge"),
        _file("./loopback", b"loopback"),
        _file("./docs/README", b"readme"),
        (_info("./link", tarfile.SYMTYPE, "/etc/passwd"), None),  # ignored, not installed
        (_info("./dev", tarfile.CHRTYPE), None),
    ])
    every = safe_members(archive)
    assert [m.target for m in every.files] == ["bridge", "loopback"] and every.links == {}
    assert _install(every, tmp_path / "bin") == {"bridge": b"bridge", "loopback": b"loopback"}
    chosen = safe_members(archive, names=["README", "bridge"])
    assert [m.target for m in chosen.files] == ["README", "bridge"]
    assert [m.info.name for m in chosen.files] == ["./docs/README", "./bridge"]
    with pytest.raises(FraktiInstallError) as info:
        safe_members(archive, names=["crictl", "bridge", "link"])
    assert not isinstance(info.value, UnsafeArchive)
    assert info.value.message == f"archive {str(archive)!r} has no crictl, link"


def test_flat_shape_refuses_a_selected_member_that_leaves_the_directory(tmp_path: Path) -> None:
    archive = _tarball(tmp_path / "evil.tgz", [_file("../../crictl")])
    if hasattr(tarfile, "data_filter"):  # the second line of defence
        with pytest.raises(UnsafeArchive, match="refused by tarfile's data filter"):
            safe_members(archive, names=["crictl"])
    else:  # installed by base name, in the caller's directory
        assert [m.target for m in safe_members(archive, names=["crictl"]).files] == ["crictl"]


def test_damaged_archives_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not a tarball at all" * 100)
    with pytest.raises(DamagedArchive, match="cannot read the archive"):
        safe_members(junk, prefix=PREFIX)
    bad_zstd = tmp_path / "bad.tar.zst"
    bad_zstd.write_bytes(tarsafe.ZSTD_MAGIC + b"\x00garbage" * 50)
    with pytest.raises(DamagedArchive, match="zstd"):
        safe_members(bad_zstd, prefix=PREFIX)
    good = _tarball(tmp_path / "good.tar.gz", GOOD_TREE).read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DamagedArchive):
        safe_members(truncated, prefix=PREFIX)


def test_reading_an_archive_that_changed_is_refused(tmp_path: Path) -> None:
    archive = _tarball(tmp_path / "kata.tar.gz", GOOD_TREE)
    selection = safe_members(archive, prefix=PREFIX)
    _tarball(archive, [_file("./opt/kata/bin/other", b"x"), *GOOD_TREE[4:]])
    with pytest.raises(DamagedArchive, match="changed while it was read"):
        _install(selection, tmp_path / "root")


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="no tarfile extraction filters")
def test_data_filter_refusal(tmp_path: Path) -> None:
    assert tarsafe.data_filter_refusal(_info("bin/x"), tmp_path) is None
    assert "absolute" in (
        tarsafe.data_filter_refusal(_info("l", tarfile.SYMTYPE, "/etc/passwd"), tmp_path) or ""
    )
    assert tarsafe.data_filter_refusal(_info("../x"), tmp_path) is not None
    assert tarsafe.data_filter_refusal(_info("d", tarfile.CHRTYPE), tmp_path) is not None


def test_select_members_works_on_headers_alone() -> None:
    files, links = tarsafe.select_members(
        [_info("opt/kata/bin/x"), _info("opt/kata/y", tarfile.SYMTYPE, "bin/x")], prefix=PREFIX
    )
    assert [m.target for m in files] == ["/opt/kata/bin/x"]
    assert links == {"/opt/kata/y": "bin/x"}
    with pytest.raises(TypeError):
        tarsafe.select_members([], prefix=PREFIX, names=["x"])
    with pytest.raises(ValueError):
        tarsafe.select_members([], prefix="/")
