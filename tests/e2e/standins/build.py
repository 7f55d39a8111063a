#!/usr/bin/env python3
"""Build the stand-in download mirror for frakti-install's end-to-end tests.

TEST SUPPORT, not product code. The tree is laid out exactly like the
upstream download hosts, so pointing the installer's mirror base URLs at it
is all it takes:

    kubernetes/release/<k8s>/bin/linux/amd64/{kubeadm,kubelet,kubectl}(.md5/.sha1/.sha512)
                                              (dl.k8s.io/release/...)
    kubernetes/release/stable-<minor>.txt
    github/kubernetes/frakti/releases/download/<frakti>/frakti
    github/kubernetes-sigs/cri-tools/releases/download/<crictl>/crictl-<crictl>-linux-amd64.tar.gz
    hyper/hypercontainer_<hyperd>-1_amd64.deb, hyper/hyperstart_<hyperd>-1_amd64.deb

Every program in it is a Python stand-in from this directory (see each
file's header). Kubernetes binaries get the hash files dl.k8s.io has for
their release (hash_files_for): .md5 and .sha1 always, .sha512 from v1.12.0
(kubernetes/release#630), .sha256 only from v1.16.0 (kubernetes/kubernetes#68555),
so v1.12.10 has no .sha256 here either: asking for one is a 404. frakti, crictl
and the hyper packages publish none upstream, so their sums are returned for
the installer's `checksums:` config. See docs/upstream-facts.md.

Usage: build.py DEST  -> builds DEST and prints {"versions", "sha256", "paths"} as JSON.
Needs dpkg-deb.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS = {"kubernetes": "v1.12.10", "frakti": "v1.12.0", "crictl": "v1.12.0", "hyperd": "1.1.0"}
# In each stand-in source, this import statement is replaced by common.py itself,
# so that every served program is one self-contained file.
COMMON_IMPORT = re.compile(r"^from common import \(.*?\)\n", re.S | re.M)
EPOCH = 1546300800  # fixed timestamps: the same sources give the same files and sums
MAINTAINER = "frakti-install e2e tests <e2e-standin@example.invalid>"


def render(source: str, version: str, program: str = "") -> bytes:
    """A stand-in source with common.py inlined and its placeholders filled in."""
    text = (HERE / source).read_text()
    common = (HERE / "common.py").read_text()
    text = COMMON_IMPORT.sub(lambda _: common, text, count=1)
    return text.replace("@VERSION@", version).replace("@PROGRAM@", program).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_files_for(kubernetes: str) -> tuple[str, ...]:
    """The hash files dl.k8s.io publishes beside a release binary of this version."""
    minor = tuple(int(p) for p in kubernetes.lstrip("v").split(".")[:2])
    found = ["md5", "sha1"]
    if minor >= (1, 12):
        found.append("sha512")
    if minor >= (1, 16):
        found.append("sha256")
    return tuple(found)


def write_hash_files(binary: Path, data: bytes, kubernetes: str) -> None:
    """Bare hex digests, as dl.k8s.io serves them."""
    for algorithm in hash_files_for(kubernetes):
        _write(binary.parent / f"{binary.name}.{algorithm}",
               hashlib.new(algorithm, data).hexdigest().encode())


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    os.utime(path, (EPOCH, EPOCH))


# As in hyperd's package/dist/lib/systemd/system/hyperd.service.
HYPERD_SERVICE = """[Unit]
Description=hyperd
Documentation=http://docs.hyper.sh
After=network.target
Requires=

[Service]
ExecStart=/usr/bin/hyperd --log_dir=/var/log/hyper
MountFlags=shared
LimitNOFILE=1048576
LimitNPROC=1048576
LimitCORE=infinity

[Install]
WantedBy=multi-user.target
"""

# As in hyperd's package/dist/etc/hyper/config, less the Bios/Cbfs lines (their
# files come from no package, and what hyperd does without them is not
# imitated). Like the real one it does not set gRPCHost.
HYPER_CONFIG = """# configurations for hyperd
# (TEST STAND-IN package for frakti-install e2e tests)

# Root directory for hyperd
# Root=/var/lib/hyper/

# Specify the hypervisor: libvirt, qemu, qemu-kvm, kvm, xen, vbox (for linux)
# When Hypervisor is not set, the hyperd will try to probe "qemu-kvm" or "xen"
# as the containers' hypervisor according to the host, if the host doesn't
# support any hardware-assisted technology, it will use "qemu-tcg".
#
# Hypervisor=qemu

# Boot kernel
Kernel=/var/lib/hyper/kernel

# Boot initrd
Initrd=/var/lib/hyper/hyper-initrd.img

# Storage driver for hyperd, valid value includes devicemapper, overlay, and aufs
# StorageDriver=overlay

# If the host IP is provided, a TCP port will be listened for, same as the '--host' option
# Host=
"""

# The real packages are built with plain `dh` from a dh_make tree, the unit
# file copied in by hand: they carry no maintainer scripts, so installing them
# neither enables nor starts hyperd.


def build_deb(
    out: Path,
    package: str,
    version: str,
    description: str,
    files: dict[str, tuple[bytes, int]],
    depends: str = "",
    conffiles: tuple[str, ...] = (),
) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for path, (data, mode) in files.items():
            _write(root / path.lstrip("/"), data, mode)
        control = [
            f"Package: {package}",
            f"Version: {version}",
            "Architecture: amd64",
            f"Maintainer: {MAINTAINER}",
            "Section: admin",
            "Priority: optional",
        ]
        if depends:
            control.append(f"Depends: {depends}")
        control.append(f"Description: {description}")
        _write(root / "DEBIAN/control", ("\n".join(control) + "\n").encode())
        if conffiles:
            _write(root / "DEBIAN/conffiles", ("\n".join(conffiles) + "\n").encode())
        for d in sorted(root.rglob("*"), reverse=True):
            if d.is_dir():
                os.utime(d, (EPOCH, EPOCH))
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    return out.read_bytes()


def build_tarball(members: dict[str, tuple[bytes, int]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, EPOCH
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=EPOCH) as fh:
        fh.write(raw.getvalue())
    return gz.getvalue()


def build(dest: Path | str, versions: dict[str, str] | None = None) -> dict[str, object]:
    """Build the mirror tree under dest (emptied first)."""
    v = dict(VERSIONS, **(versions or {}))
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    sums: dict[str, str] = {}
    paths: dict[str, str] = {}

    k8s = f"kubernetes/release/{v['kubernetes']}/bin/linux/amd64"
    for program in ("kubeadm", "kubelet", "kubectl"):
        data = render("kube.py", v["kubernetes"], program)
        _write(dest / k8s / program, data, 0o755)
        write_hash_files(dest / k8s / program, data, v["kubernetes"])
        sums[program], paths[program] = sha256(data), f"{k8s}/{program}"
    minor = ".".join(v["kubernetes"].lstrip("v").split(".")[:2])
    _write(dest / f"kubernetes/release/stable-{minor}.txt", f"{v['kubernetes']}\n".encode())

    frakti = f"github/kubernetes/frakti/releases/download/{v['frakti']}/frakti"
    data = render("frakti.py", v["frakti"])
    _write(dest / frakti, data, 0o755)
    sums["frakti"], paths["frakti"] = sha256(data), frakti

    crictl = (
        f"github/kubernetes-sigs/cri-tools/releases/download/{v['crictl']}/"
        f"crictl-{v['crictl']}-linux-amd64.tar.gz"
    )
    data = build_tarball({"crictl": (render("crictl.py", v["crictl"]), 0o755)})
    _write(dest / crictl, data)
    sums["crictl"], paths["crictl"] = sha256(data), crictl

    deb_version = f"{v['hyperd']}-1"
    hyper = dest / "hyper"
    hyper.mkdir(parents=True)
    name = f"hypercontainer_{deb_version}_amd64.deb"
    data = build_deb(
        hyper / name,
        "hypercontainer",
        deb_version,
        "TEST STAND-IN for HyperContainer hyperd (frakti-install e2e tests)\n"
        " Python stand-ins for hyperd and hyperctl; runs no VM.",
        {
            "/usr/bin/hyperd": (render("hyperd.py", v["hyperd"]), 0o755),
            "/usr/bin/hyperctl": (render("hyperctl.py", v["hyperd"]), 0o755),
            "/lib/systemd/system/hyperd.service": (HYPERD_SERVICE.encode(), 0o644),
            "/etc/hyper/config": (HYPER_CONFIG.encode(), 0o644),
        },
        depends="python3",
        conffiles=("/etc/hyper/config",),
    )
    os.utime(hyper / name, (EPOCH, EPOCH))
    sums["hypercontainer"], paths["hypercontainer"] = sha256(data), f"hyper/{name}"
    name = f"hyperstart_{deb_version}_amd64.deb"
    data = build_deb(
        hyper / name,
        "hyperstart",
        deb_version,
        "TEST STAND-IN for hyperstart (frakti-install e2e tests)\n"
        " Placeholder guest kernel and initrd files; boots nothing.",
        {
            "/var/lib/hyper/kernel": (b"TEST STAND-IN hyperstart kernel\n" * 64, 0o644),
            "/var/lib/hyper/hyper-initrd.img": (b"TEST STAND-IN hyperstart initrd\n" * 64, 0o644),
        },
    )
    os.utime(hyper / name, (EPOCH, EPOCH))
    sums["hyperstart"], paths["hyperstart"] = sha256(data), f"hyper/{name}"
    return {"versions": v, "sha256": sums, "paths": paths}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(json.dumps(build(sys.argv[1]), indent=1))
