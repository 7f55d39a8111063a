"""The test bed of the kata profile's end-to-end test, built on tests/e2e/testbed.py.
TEST SUPPORT, not product code.

- ``ensure_kata_image(base)``: the harness's cached image of one Debian suite
  (bookworm, trixie or sid: testbed.ensure_image(suite)) plus, in apt's
  cache (downloaded, not installed: the installer installs them), the
  packages the kata profile asks apt for: the family's containerd and repo
  packages from kata.yaml (containerd, gpg, ca-certificates) and runc, all
  of that suite. Built with apt-get in a chroot on a copy of the base image,
  cached beside it under the same cache root (``kata-<suite>-*``), as
  multinode/lab.py does.
- ``build_kata_mirror(dest, repo_key)``: what the installer downloads, laid out
  like upstream under one directory, served in the container by
  testbed.serve_mirror on 127.0.0.1:8080:

      pkgs/core:/stable:/v1.31/deb/            like pkgs.k8s.io (a flat apt repo):
          Release.key                          the test key, armored
          InRelease, Release, Release.gpg      signed by it
          Packages, Packages.gz
          amd64/<name>_<version>_amd64.deb     kubelet, kubeadm, kubectl, kubernetes-cni
      github/kata-containers/kata-containers/releases/download/<kata>/
          kata-static-<kata>-amd64.tar.zst     the kata release tarball's stand-in

  Every program in it is a stand-in from standins/ (see each file's header);
  the kubelet and kubeadm packages also carry standins/kubelet.service and
  standins/10-kubeadm.conf, copies of the unit and drop-in that pkgs.k8s.io's
  packages ship, and dh_installsystemd-style maintainer scripts (the kubelet
  is enabled and started on installation, then crash-loops until kubeadm init).
- ``RepoKey``: a throw-away OpenPGP signing key in a temporary GNUPGHOME
  (gpg on the test host), standing in for the "isv:kubernetes OBS Project"
  key; the installer is told to trust it with key_fingerprints.
"""

from __future__ import annotations

import datetime
import email.utils
import gzip
import hashlib
import inspect
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import testbed
import yaml

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"
# the project under test (FRAKTI_E2E_PROJECT: another checkout, as in ../conftest.py)
PROJECT_ROOT = Path(os.environ.get("FRAKTI_E2E_PROJECT") or Path(__file__).resolve().parents[3])
PROJECT_DATA = PROJECT_ROOT / "src" / "frakti_install" / "data"
EPOCH = 1546300800  # fixed timestamps: the same sources give the same files and sums
MAINTAINER = "frakti-install e2e tests <e2e-standin@example.invalid>"
KUBE_PROGRAMS = ("kubeadm", "kubelet", "kubectl")
CNI_PLUGINS = ("bandwidth", "bridge", "firewall", "host-local", "loopback", "portmap", "ptp")
CNI_VERSION = "1.5.1"  # kubernetes-cni in pkgs.k8s.io's v1.31 repository


def kata_data() -> dict:
    return yaml.safe_load((PROJECT_DATA / "kata.yaml").read_text())


def offline_packages() -> Tuple[str, ...]:
    """What the kata profile asks apt for on Debian, besides the Kubernetes repo's packages."""
    family = kata_data()["families"]["debian"]
    names = [*family["containerd_packages"], "runc", *family["repo_packages"]]
    return tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------- the image


def _customize_kata_image(
    root: Path, packages: Tuple[str, ...], base_offline: Tuple[str, ...], log: Path
) -> None:
    """Download (not install) `packages` into the copied image's apt cache.

    Its source is part of the cache key."""
    with testbed.host_network(root):
        try:
            testbed.download_into_cache(root, log, packages)
        except testbed.TestbedError:
            # The image's package lists went stale (sid's do within days): refresh
            # them, and the base image's offline cache, so both agree again.
            testbed.chroot_apt(root, log, "update", "-q")
            testbed.download_into_cache(root, log, packages)
            testbed.download_into_cache(root, log, base_offline)
    debs = {p.name.split("_")[0] for p in (root / "var/cache/apt/archives").glob("*.deb")}
    installed = subprocess.run(
        ["chroot", str(root), "dpkg-query", "-W", "-f=${Package}\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    missing = [p for p in packages if p not in debs and p not in installed]
    if missing:
        raise testbed.TestbedError(f"apt left no .deb of {missing} in the image's cache")


def ensure_kata_image(base: Path) -> Path:
    """The base image plus the kata profile's packages of its suite in apt's cache
    (~30 s, once per suite; each suite's copy is kept beside the others)."""
    packages = offline_packages()
    base_recipe = testbed.recipe_of(base)
    suite, base_offline = str(base_recipe["suite"]), tuple(base_recipe["download_only"])
    recipe = {
        "suite": suite,
        "packages": packages,
        "customize": inspect.getsource(_customize_kata_image),
    }
    return testbed.derived_image(
        f"kata-{suite}",
        base,
        recipe,
        lambda root, log: _customize_kata_image(root, packages, base_offline, log),
    )


# --------------------------------------------------------------------------- the stand-ins


def _inline_common(text: str) -> str:
    """A stand-in source with tests/e2e/standins/common.py inlined (as build.py does)."""
    builder = testbed._load_builder()
    common = (testbed.STANDINS / "common.py").read_text()
    return builder.COMMON_IMPORT.sub(lambda _: common, text, count=1)


MAIN_MARKER = '\nif __name__ == "__main__":'


def render_kube(program: str, version: str, patch: str = "") -> bytes:
    """A kube stand-in program; `patch` (a fragment such as standin_kata_multinode.py)
    goes just before its `if __name__` line."""
    text = _inline_common((STANDINS / "kube131.py").read_text())
    if patch:
        if text.count(MAIN_MARKER) != 1:
            raise testbed.TestbedError("kube131.py: no single `if __name__` line to insert before")
        text = text.replace(MAIN_MARKER, "\n\n" + patch + MAIN_MARKER)
    return text.replace("@PROGRAM@", program).replace("@VERSION@", version).encode()


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    os.utime(path, (EPOCH, EPOCH))


def build_deb(
    out_dir: Path,
    control: Dict[str, str],
    files: Dict[str, Tuple[bytes, int]],
    scripts: Optional[Dict[str, str]] = None,
) -> Path:
    """A .deb built with dpkg-deb from control fields, files and maintainer scripts."""
    name = f"{control['Package']}_{control['Version']}_{control['Architecture']}.deb"
    out = out_dir / name
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for path, (data, mode) in files.items():
            _write(root / path.lstrip("/"), data, mode)
        fields = dict(control)
        description = fields.pop("Description")
        for name, value in (
            ("Maintainer", MAINTAINER),
            ("Section", "admin"),
            ("Priority", "optional"),
        ):
            fields.setdefault(name, value)
        text = "".join(f"{k}: {v}\n" for k, v in fields.items()) + f"Description: {description}\n"
        _write(root / "DEBIAN/control", text.encode())
        for script, body in (scripts or {}).items():
            _write(root / "DEBIAN" / script, body.encode(), 0o755)
        for d in sorted(root.rglob("*"), reverse=True):
            if d.is_dir():
                os.utime(d, (EPOCH, EPOCH))
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
            check=True,
            env=dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH)),
            stdout=subprocess.DEVNULL,
        )
    return out


# What dh_installsystemd puts in a package's maintainer scripts: the unit is
# enabled and started on installation (the kubelet then crash-loops until
# `kubeadm init` writes its config, as the Kubernetes docs describe).
KUBELET_POSTINST = """#!/bin/sh
set -e
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ]; then
    if deb-systemd-helper --quiet was-enabled 'kubelet.service'; then
        deb-systemd-helper enable 'kubelet.service' >/dev/null || true
    else
        deb-systemd-helper update-state 'kubelet.service' >/dev/null || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        if [ -n "$2" ]; then _action=restart; else _action=start; fi
        deb-systemd-invoke $_action 'kubelet.service' >/dev/null || true
    fi
fi
"""
KUBELET_PRERM = """#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    deb-systemd-invoke stop 'kubelet.service' >/dev/null || true
fi
"""
KUBEADM_POSTINST = """#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
"""


def build_kube_debs(out_dir: Path, kubernetes: str, kube_patch: str = "") -> List[Path]:
    """kubelet, kubeadm, kubectl (kubernetes: v1.31.13) and kubernetes-cni, as in pkgs.k8s.io."""
    version = kubernetes.lstrip("v") + "-1.1"
    stand_in = "\n TEST STAND-IN (frakti-install e2e tests): a Python imitation, see its header."
    programs = {p: (render_kube(p, kubernetes, kube_patch), 0o755) for p in KUBE_PROGRAMS}
    cni = (STANDINS / "cni-plugin.sh").read_text().replace("@CNI_VERSION@", CNI_VERSION)
    debs = [
        build_deb(
            out_dir,
            {
                "Package": "kubelet",
                "Version": version,
                "Architecture": "amd64",
                "Depends": "iptables (>= 1.4.21), kubernetes-cni (>= 1.1.1), iproute2, socat, "
                "util-linux, mount, ebtables, ethtool, conntrack",
                "Description": "Node agent for Kubernetes clusters" + stand_in,
            },
            {
                "/usr/bin/kubelet": programs["kubelet"],
                "/usr/lib/systemd/system/kubelet.service": (
                    (STANDINS / "kubelet.service").read_bytes(),
                    0o644,
                ),
            },
            {"postinst": KUBELET_POSTINST, "prerm": KUBELET_PRERM},
        ),
        build_deb(
            out_dir,
            {
                "Package": "kubeadm",
                "Version": version,
                "Architecture": "amd64",
                "Depends": "kubelet (>= 1.19.0), kubectl (>= 1.19.0), kubernetes-cni (>= 1.1.1)",
                "Description": "Command-line utility for administering a Kubernetes cluster"
                + stand_in,
            },
            {
                "/usr/bin/kubeadm": programs["kubeadm"],
                "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf": (
                    (STANDINS / "10-kubeadm.conf").read_bytes(),
                    0o644,
                ),
            },
            {"postinst": KUBEADM_POSTINST},
        ),
        build_deb(
            out_dir,
            {
                "Package": "kubectl",
                "Version": version,
                "Architecture": "amd64",
                "Description": "Command-line utility for interacting with a Kubernetes cluster"
                + stand_in,
            },
            {"/usr/bin/kubectl": programs["kubectl"]},
        ),
        build_deb(
            out_dir,
            {
                "Package": "kubernetes-cni",
                "Version": f"{CNI_VERSION}-1.1",
                "Architecture": "amd64",
                "Description": "Binaries required to provision kubernetes container networking"
                "\n TEST STAND-IN (frakti-install e2e tests): shell imitations of the plugins.",
            },
            {f"/opt/cni/bin/{p}": (cni.encode(), 0o755) for p in CNI_PLUGINS},
        ),
    ]
    return debs


# --------------------------------------------------------------------------- the signed repo


class RepoKey:
    """A throw-away signing key (RSA 2048, like pkgs.k8s.io's) in a temporary GNUPGHOME."""

    UID = "frakti-install e2e test repository <e2e-standin@example.invalid>"

    def __init__(self) -> None:
        # a short path: gpg-agent's socket lives in it
        self.home = Path(tempfile.mkdtemp(prefix="fi-gpg-", dir="/tmp"))
        self.home.chmod(0o700)
        self._gpg("--quick-gen-key", self.UID, "rsa2048", "sign", "never")
        colons = self._gpg("--with-colons", "--list-keys", self.UID)
        self.fingerprint = next(
            line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:")
        )

    def _gpg(self, *args: str) -> str:
        argv = [
            "gpg",
            "--batch",
            "--homedir",
            str(self.home),
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            *args,
        ]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def armored_public_key(self) -> str:
        return self._gpg("--armor", "--export", self.fingerprint)

    def sign(self, release: Path) -> None:
        """InRelease (clearsigned) and Release.gpg (detached) beside the Release file."""
        user = ("--local-user", self.fingerprint, "--digest-algo", "SHA256")
        self._gpg(*user, "--clearsign", "--output", str(release.parent / "InRelease"), str(release))
        self._gpg(
            *user,
            "--armor",
            "--detach-sign",
            "--output",
            str(release.parent / "Release.gpg"),
            str(release),
        )

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True
        )
        shutil.rmtree(self.home, ignore_errors=True)


def _digests(data: bytes) -> Dict[str, str]:
    return {
        "MD5sum": hashlib.md5(data).hexdigest(),
        "SHA1": hashlib.sha1(data).hexdigest(),
        "SHA256": hashlib.sha256(data).hexdigest(),
    }


def build_apt_repo(repo: Path, debs: List[Path], key: RepoKey, label: str) -> None:
    """A flat, signed apt repository (`deb [signed-by=...] URL /`) over the .debs under repo."""
    stanzas = []
    for deb in sorted(debs):
        data = deb.read_bytes()
        control = subprocess.run(
            ["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True
        ).stdout.rstrip("\n")
        sums = _digests(data)
        stanzas.append(
            control
            + f"\nFilename: {deb.relative_to(repo)}\nSize: {len(data)}\n"
            + "".join(f"{k}: {v}\n" for k, v in sums.items())
        )
    packages = "\n".join(stanzas).encode()
    _write(repo / "Packages", packages)
    _write(repo / "Packages.gz", gzip.compress(packages, mtime=EPOCH))
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"Origin: obs://build.opensuse.org/{label}/deb",
        f"Label: {label}",
        "Architectures: amd64",
        f"Date: {email.utils.format_datetime(now, usegmt=True)}",
        "Description: TEST STAND-IN of a pkgs.k8s.io repository (frakti-install e2e tests)",
    ]
    for field, algo in (("MD5Sum", "MD5sum"), ("SHA1", "SHA1"), ("SHA256", "SHA256")):
        lines.append(f"{field}:")
        for name in ("Packages", "Packages.gz"):
            data = (repo / name).read_bytes()
            lines.append(f" {_digests(data)[algo]} {len(data)} {name}")
    release = repo / "Release"
    release.write_text("\n".join(lines) + "\n")
    key.sign(release)
    (repo / "Release.key").write_text(key.armored_public_key())


# --------------------------------------------------------------------------- kata's tarball


def build_kata_tarball(version: str) -> bytes:
    """kata-static-<version>-amd64.tar.zst's stand-in, laid out like the real one
    (./opt/kata): from 4.0.0 the runtime-rs shim and its configuration; from
    4.1.0 without the Go runtime, which ships in kata-go-static (kata.layouts)."""
    release = tuple(int(part) for part in version.split("."))
    rust, go = release >= (4, 0, 0), release < (4, 1, 0)
    script = (STANDINS / "kata.sh").read_text().replace("@KATA_VERSION@", version)
    programs = script.replace("@SHIM_LANGUAGE@", "Golang").encode()
    rust_shim = script.replace("@SHIM_LANGUAGE@", "Rust").encode() if rust else b""

    def placeholder(what: str) -> bytes:
        return f"TEST STAND-IN: {what} of kata {version} (frakti-install e2e tests)\n".encode()

    share = "./opt/kata/share"
    qemu = b'[hypervisor.qemu]\npath = "/opt/kata/bin/qemu-system-x86_64"\n'
    config = placeholder("configuration") + qemu
    members: List[Tuple[str, str, object]] = [  # (name, kind, data | link target)
        *[
            (d, "dir", None)
            for d in (
                ".",
                "./opt",
                "./opt/kata",
                "./opt/kata/bin",
                "./opt/kata/libexec",
                share,
                f"{share}/defaults",
                f"{share}/defaults/kata-containers",
                f"{share}/kata-containers",
                "./opt/kata/runtime-rs",
                "./opt/kata/runtime-rs/bin",
            )
        ],
        *(
            [
                ("./opt/kata/bin/containerd-shim-kata-v2", "file", programs),
                ("./opt/kata/bin/kata-runtime", "file", programs),
                (f"{share}/defaults/kata-containers/configuration-qemu.toml", "file", config),
                (f"{share}/defaults/kata-containers/configuration-clh.toml", "file", config),
                (
                    f"{share}/defaults/kata-containers/configuration.toml",
                    "link",
                    "configuration-qemu.toml",
                ),
            ]
            if go
            else []
        ),
        ("./opt/kata/bin/kata-collect-data.sh", "file", b"#!/bin/sh\n" + placeholder("script")),
        ("./opt/kata/bin/qemu-system-x86_64", "file", placeholder("QEMU")),
        ("./opt/kata/libexec/virtiofsd", "file", placeholder("virtiofsd")),
        (
            "./opt/kata/runtime-rs/bin/containerd-shim-kata-v2",
            "file",
            rust_shim or placeholder("Rust shim"),
        ),
        *(
            [
                (f"{share}/defaults/kata-containers/runtime-rs", "dir", None),
                (
                    f"{share}/defaults/kata-containers/runtime-rs/configuration-qemu-runtime-rs.toml",
                    "file",
                    config,
                ),
            ]
            if rust
            else []
        ),
        (f"{share}/kata-containers/vmlinux-6.12.28-153", "file", placeholder("guest kernel")),
        (f"{share}/kata-containers/vmlinux.container", "link", "vmlinux-6.12.28-153"),
        (f"{share}/kata-containers/kata-ubuntu-noble.image", "file", placeholder("guest image")),
        (f"{share}/kata-containers/kata-containers.img", "link", "kata-ubuntu-noble.image"),
        (f"{share}/kata-containers/kata-alpine-3.18.initrd", "file", placeholder("initrd")),
        (f"{share}/kata-containers/kata-containers-initrd.img", "link", "kata-alpine-3.18.initrd"),
    ]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.uname, info.gname = EPOCH, "root", "root"
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, str(data), 0o777
                tar.addfile(info)
            else:
                assert isinstance(data, bytes)
                executable = "/bin/" in name or "/libexec/" in name
                info.size, info.mode = len(data), 0o755 if executable else 0o644
                tar.addfile(info, io.BytesIO(data))
    import zstandard  # the installer's own dependency for .tar.zst

    return zstandard.ZstdCompressor().compress(raw.getvalue())


# --------------------------------------------------------------------------- the mirror


def build_kata_mirror(
    dest: Path,
    key: RepoKey,
    kube_patch: str = "",
    upgrade_minors: Sequence[str] = (),
    kata_releases: Sequence[str] = (),
) -> Dict[str, object]:
    """Everything the installer downloads, under dest (emptied first); returns what the
    test needs: {"versions", "kata_sha256", "fingerprint", "mirrors", "package_version",
    "upgrades"}. kube_patch: a fragment put into the kube stand-ins (render_kube).
    upgrade_minors: more minors' repositories (v1.36), each with its latest patch's
    stand-ins, for `upgrade`; "upgrades" maps each to that patch. kata_releases: more
    Kata tarballs beside the default's; "kata_sha256s" has each release's sum."""
    data = kata_data()
    minor, kata = str(data["versions"]["kubernetes"]), str(data["versions"]["kata"])
    # the default minor's latest patch, as the installer picks it
    kubernetes = next(r["latest"] for r in data["kubernetes"]["releases"] if r["minor"] == minor)
    if dest.exists():
        shutil.rmtree(dest)
    repo = dest / f"pkgs/core:/stable:/{minor}/deb"
    debs = build_kube_debs(repo / "amd64", kubernetes, kube_patch)
    build_apt_repo(repo, debs, key, f"isv:kubernetes:core:stable:{minor}")
    upgrades = {}
    for extra in upgrade_minors:
        patch = next(r["latest"] for r in data["kubernetes"]["releases"] if r["minor"] == extra)
        extra_repo = dest / f"pkgs/core:/stable:/{extra}/deb"
        extra_debs = build_kube_debs(extra_repo / "amd64", patch, kube_patch)
        build_apt_repo(extra_repo, extra_debs, key, f"isv:kubernetes:core:stable:{extra}")
        upgrades[extra] = patch
    sums = {}
    for version in (*kata_releases, kata):
        packed = build_kata_tarball(version)
        release = dest / f"github/kata-containers/kata-containers/releases/download/{version}"
        _write(release / f"kata-static-{version}-amd64.tar.zst", packed)
        sums[version] = hashlib.sha256(packed).hexdigest()
    tarball = packed
    return {
        "versions": {"kubernetes": kubernetes, "minor": minor, "kata": kata, "cni": CNI_VERSION},
        "package_version": kubernetes.lstrip("v") + "-1.1",
        "upgrades": upgrades,
        "kata_sha256": hashlib.sha256(tarball).hexdigest(),
        "kata_sha256s": sums,
        "fingerprint": key.fingerprint,
        "mirrors": {
            "kubernetes-pkgs": f"{testbed.MIRROR_URL}/pkgs",
            "github": f"{testbed.MIRROR_URL}/github",
        },
    }
