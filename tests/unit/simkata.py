"""The simulated host of simhost.py, extended for the kata profile (without
editing simhost.py): containerd (a unit that loads its config files the way
containerd 1.x merges them, `ctr`, `containerd config dump`), the Kubernetes
package repositories (apt needs the list, its keyring and an `apt-get update`;
dnf needs --disableexcludes), `apt-mark`, `gpg`, `ln`, the kata shim, and
kubectl for RuntimeClasses and server-side dry runs of pods.

A test stand-in only: it keeps the state those programs would keep.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import re
import sys
import tarfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import yaml
import zstandard

from frakti_install.config import Settings
from frakti_install.host import CommandResult
from tests.unit.simhost import (
    KERNEL_RELEASE,
    OS_RELEASE,
    REPO_PACKAGES,
    SimDownloader,
    SimMachine,
    SimRunner,
    SimState,
    UnitState,
    apt_operands,
    kernel_modules,
    module_name,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KATA_SYSTEMS = [
    ("ubuntu", "22.04"),
    ("ubuntu", "24.04"),
    ("debian", "12"),
    ("rocky", "9.3"),
    ("almalinux", "9.4"),
    ("rhel", "9.4"),
    ("debian", "13"),
    ("ubuntu", "26.04"),
    ("rocky", "10.0"),
    ("almalinux", "10.0"),
    ("rhel", "10.0"),
]
# /etc/os-release of the systems only the kata profile supports (simhost.py has
# the others); the installer reads ID and VERSION_ID.
KATA_OS_RELEASE = {
    ("debian", "13"): 'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="13"\n'
    'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n',
    ("ubuntu", "26.04"): 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="26.04"\n'
    'PRETTY_NAME="Ubuntu 26.04 LTS"\n',
    ("rocky", "10.0"): 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
    'VERSION_ID="10.0"\nPRETTY_NAME="Rocky Linux 10.0 (Red Quartz)"\n',
    ("almalinux", "10.0"): 'NAME="AlmaLinux"\nID="almalinux"\nID_LIKE="rhel centos fedora"\n'
    'VERSION_ID="10.0"\nPRETTY_NAME="AlmaLinux 10.0 (Purple Lion)"\n',
    ("rhel", "10.0"): 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="centos fedora"\n'
    'VERSION_ID="10.0"\nPRETTY_NAME="Red Hat Enterprise Linux 10.0 (Coughlan)"\n',
}
OS_RELEASE.update(KATA_OS_RELEASE)  # after simhost.SUPPORTED: the frakti tests leave them out
KUBE_VERSION = "1.35.9"
KATA_URL = (
    "https://github.com/kata-containers/kata-containers/releases/download/3.32.0/"
    "kata-static-3.32.0-amd64.tar.zst"
)
KEY_URL = "https://pkgs.k8s.io/core:/stable:/v1.35/deb/Release.key"
KUBERNETES_KEY = "DE15B14486CD377B9E876E1A234654DA9A296436"
SOCKET = "/run/containerd/containerd.sock"
CONFIG = "/etc/containerd/config.toml"
CRI = "io.containerd.grpc.v1.cri"
CRI_RUNTIME = "io.containerd.cri.v1.runtime"  # containerd 2.x's CRI runtime plugin (config v3)
CRI_IMAGES = "io.containerd.cri.v1.images"
CRI_NAMES = {"cri", CRI, CRI_RUNTIME, CRI_IMAGES}
# `containerd --version` of each system's containerd: Debian's and Ubuntu's print
# their package version, Docker's containerd.io (2.x on EL9 now) its tag and commit
CONTAINERD_RELEASES = {
    "debian": (
        (1, 6, 20),
        "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3",
    ),
    "ubuntu": ((1, 7, 24), "containerd github.com/containerd/containerd 1.7.24 "),
    # Debian 13's, as the real binary prints it (fixtures/probes/containerd-version/trixie.json)
    "debian-13": (
        (1, 7, 24),
        "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1",
    ),
    # Ubuntu 26.04's containerd 2.2.2 (resolute-updates 2.2.2-0ubuntu1.1); the
    # words as Debian's 2.x build prints them (fixtures/.../sid.json: module path
    # .../v2, then the version): Ubuntu's own output is not captured
    "ubuntu-26.04": ((2, 2, 2), "containerd github.com/containerd/containerd/v2 2.2.2 "),
    "containerd.io": (
        (2, 1, 5),
        "containerd containerd.io v2.1.5 fcd43222d6b07379a4be9786bda52438f0dd16a1",
    ),
}
KUBE_PACKAGES = ("kubelet", "kubeadm", "kubectl", "kubernetes-cni", "cri-tools")

PACKAGE_UNITS = {
    "containerd": "containerd.service",
    "containerd.io": "containerd.service",
    "kubelet": "kubelet.service",
}
PACKAGE_FILES = {
    "containerd": ["/usr/bin/containerd", "/usr/bin/ctr"],
    "containerd.io": ["/usr/bin/containerd", "/usr/bin/ctr"],
    "kubelet": ["/usr/bin/kubelet"],
    "kubeadm": ["/usr/bin/kubeadm"],
    "kubectl": ["/usr/bin/kubectl"],
    "kubernetes-cni": [f"/opt/cni/bin/{p}" for p in ("bridge", "host-local", "loopback")],
    "gpg": ["/usr/bin/gpg"],
}
# What Docker's containerd.io package ships (it disables the CRI plugin).
DOCKER_CONTAINERD_CONFIG = """#   Copyright 2018-2022 Docker Inc.

#   Licensed under the Apache License, Version 2.0 (the "License");
#   you may not use this file except in compliance with the License.

disabled_plugins = ["cri"]

#root = "/var/lib/containerd"
#state = "/run/containerd"
#subreaper = true
#oom_score = 0

#[grpc]
#  address = "/run/containerd/containerd.sock"
#  uid = 0
#  gid = 0
"""


def kata_tarball(extra: Sequence[Tuple[str, str, str]] = (), version: str = "3.32.0") -> bytes:
    """A small stand-in for kata-static-*.tar.zst (same layout: ./opt/kata/...).

    extra: (kind, name, data-or-link-target) members appended, kind file|link|dir|fifo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:

        def add(name: str, kind: str = "file", data: str = "", mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 0, mode
            payload = b""
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, data
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, data
            else:
                payload = data.encode() or f"# {name} of kata {version}\n".encode()
                info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload) if payload else None)

        for directory in (
            ".",
            "./opt",
            "./opt/kata",
            "./opt/kata/bin",
            "./opt/kata/share",
            "./opt/kata/share/defaults",
            "./opt/kata/share/defaults/kata-containers",
            "./opt/kata/share/kata-containers",
        ):
            add(directory, "dir")
        # 4.0.0 adds runtime-rs (its Makefile's BINDIR, CONFDIR); from 4.1.0 the
        # Go runtime ships in kata-go-static instead (docs/upstream-facts.md #28)
        release = tuple(int(part) for part in version.split("."))
        go_runtime = release < (4, 1, 0)
        binaries = ["qemu-system-x86_64"]
        if go_runtime:
            binaries += ["containerd-shim-kata-v2", "kata-runtime"]
        for binary in binaries:
            add(f"./opt/kata/bin/{binary}", mode=0o755)
        share = "./opt/kata/share"
        if release >= (4, 0, 0):
            add("./opt/kata/runtime-rs", "dir")
            add("./opt/kata/runtime-rs/bin", "dir")
            add("./opt/kata/runtime-rs/bin/containerd-shim-kata-v2", mode=0o755)
            add(f"{share}/defaults/kata-containers/runtime-rs", "dir")
            add(f"{share}/defaults/kata-containers/runtime-rs/configuration-qemu-runtime-rs.toml")
        if go_runtime:
            add(f"{share}/defaults/kata-containers/configuration-qemu.toml")
        add(f"{share}/kata-containers/vmlinux-6.12.28-153")
        add(f"{share}/kata-containers/kata-ubuntu-noble.image")
        add(f"{share}/kata-containers/vmlinux.container", "link", "vmlinux-6.12.28-153")
        add(f"{share}/kata-containers/kata-containers.img", "link", "kata-ubuntu-noble.image")
        add(
            f"{share}/defaults/kata-containers/configuration.toml",
            "link",
            "configuration-qemu.toml",
        )
        for kind, name, data in extra:
            add(name, kind, data)
    return zstandard.ZstdCompressor().compress(buffer.getvalue())


def signing_key(fingerprint: str = KUBERNETES_KEY, expires: int = 0) -> bytes:
    """expires: the primary key's expiry (epoch seconds, 0: never), as gpg's field 7."""
    return (
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n"
        f"sim-fingerprint: {fingerprint}\n"
        f"sim-expires: {expires or ''}\n"
        "-----END PGP PUBLIC KEY BLOCK-----\n"
    ).encode()


class KataSimDownloader(SimDownloader):
    """Also serves the kata tarball and the signing key; `replace` swaps a file's bytes."""

    def __init__(self, cache: Path) -> None:
        super().__init__(cache)
        self.replace: Dict[str, bytes] = {}

    @staticmethod
    def content(url: str) -> bytes:
        if url.endswith(".tar.zst"):
            return kata_tarball(version=url.rsplit("/", 2)[-2])
        if url.endswith(("Release.key", "repomd.xml.key")):  # deb, rpm: the same OBS key
            return signing_key()
        return SimDownloader.content(url)

    def _bytes(self, url: str) -> bytes:
        data = self.replace.get(url, self.content(url))
        return data + (b"x" if url in self.corrupt else b"")

    def fetch(self, url: str, sha256: str) -> Path:
        from frakti_install.errors import ChecksumMismatch

        self.fetched.append(url)
        data = self._bytes(url)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ChecksumMismatch(url, sha256, actual)
        return self._store(data)

    def fetch_unverified(self, url: str) -> Path:
        self.fetched.append(url)
        return self._store(self._bytes(url))

    def _store(self, data: bytes) -> Path:
        path = self.cache / hashlib.sha256(data).hexdigest()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def merge_containerd(into: Dict[str, Any], other: Dict[str, Any]) -> None:
    """containerd 1.x's mergeConfig: scalars override, lists append, and each
    plugin's section is replaced as a whole (containerd issue #5837)."""
    for key, value in other.items():
        if key == "plugins":
            into.setdefault("plugins", {}).update(value)
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + value
        else:
            into[key] = value


def _merge_2x(into: Dict[str, Any], other: Dict[str, Any], top: bool = True) -> None:
    """containerd 2.x's mergeConfig: the main fields take what is set (an empty
    value leaves them be), lists gain what they lack, tables merge key by key
    (plugins too: containerd issue #5837 fixed), where any value overrides."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge_2x(into[key], value, top=False)
        elif top and isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + [v for v in value if v not in into[key]]
        elif not top or value not in (0, "", [], {}) or key not in into:
            into[key] = json.loads(json.dumps(value))


def _v1_migrate(config: Dict[str, Any]) -> Dict[str, Any]:
    """Version 1 plugin names to URIs (only the one the sim meets)."""
    config = json.loads(json.dumps(config))
    plugins = config.get("plugins", {})
    if "cri" in plugins:
        plugins[CRI] = plugins.pop("cri")
    config["disabled_plugins"] = [
        CRI if name == "cri" else name for name in config.get("disabled_plugins", [])
    ]
    return config


IMAGE_KEYS = (
    "registry",
    "image_decryption",
    "max_concurrent_downloads",
    "image_pull_progress_timeout",
    "image_pull_with_sync_fs",
    "stats_collect_period",
)
IMAGE_CONTAINERD_KEYS = ("snapshotter", "disable_snapshot_annotations", "discard_unpacked_layers")
SERVER_KEYS = (
    "disable_tcp_service",
    "stream_server_address",
    "stream_server_port",
    "stream_idle_timeout",
    "enable_tls_streaming",
    "x509_key_pair_streaming",
)


def _cri_migrate(plugins: Dict[str, Any]) -> None:
    """containerd 2.x's config v2 -> v3 migration of the CRI tables: what the
    v3 tables set already wins over the v2 table's (runtimes included)."""
    src = plugins.get(CRI)
    if not isinstance(src, dict):
        return
    runtime = plugins.setdefault(CRI_RUNTIME, {})
    for key, value in src.items():
        if key not in ("cni", "containerd", "sandbox_image", *IMAGE_KEYS, *SERVER_KEYS):
            runtime.setdefault(key, value)
    cni = runtime.setdefault("cni", {}) if "cni" in src else None
    for key, value in src.get("cni", {}).items():
        if key == "bin_dir":
            if not cni.get("bin_dirs"):
                cni["bin_dirs"] = [value]
        else:
            cni.setdefault(key, value)
    if "containerd" in src:
        containerd = runtime.setdefault("containerd", {})
        for key, value in src["containerd"].items():
            if key not in IMAGE_CONTAINERD_KEYS:
                containerd.setdefault(key, value)
    images = plugins.setdefault(CRI_IMAGES, {})
    if "sandbox_image" in src:
        images.setdefault("pinned_images", {})["sandbox"] = src["sandbox_image"]
    for key in IMAGE_KEYS:
        if key in src:
            images[key] = src[key]
    plugins[CRI] = {k: v for k, v in src.items() if k in SERVER_KEYS}


def toml_text(table: Dict[str, Any], path: Tuple[str, ...] = ()) -> str:
    """A dict as TOML, indented like `containerd config dump`."""

    def key(name: str) -> str:
        return name if re.match(r"^[A-Za-z0-9_-]+$", name) else json.dumps(name)

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, (int, float)):
            return str(item)
        if isinstance(item, list):
            return "[" + ", ".join(value(v) for v in item) + "]"
        return json.dumps(item)

    indent = "  " * max(len(path) - 1, 0)
    lines = [f"{indent}{key(k)} = {value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for name, sub in table.items():
        if isinstance(sub, dict):
            full = (*path, name)
            lines += ["", "  " * (len(full) - 1) + "[" + ".".join(key(p) for p in full) + "]"]
            lines.append(toml_text(sub, full))
    return "\n".join(lines)


class KataSimRunner(SimRunner):
    READ_ONLY = SimRunner.READ_ONLY | {"ctr", "containerd-shim-kata-v2", "modinfo"}

    def __init__(self, root: Path, state: Any, ip: str = "10.0.0.1", *, deb: bool) -> None:
        super().__init__(root, state, ip)
        self.deb = deb  # dpkg's postinst scripts start services; rpm's do not
        self.apt_index = ""  # the kubernetes.list apt saw at its last update
        self.holds: List[str] = []
        self.runtime_classes: Dict[str, Dict[str, Any]] = {}
        self.node_upgrades: List[str] = []  # the kubeadm release of each `kubeadm upgrade node`
        self.containerd_loaded: Optional[Dict[str, Any]] = None  # as it last (re)started
        # the release `containerd --version` prints (KataSimMachine sets it per system)
        self.containerd_release, self.containerd_version_output = CONTAINERD_RELEASES["debian"]
        # modules the kernel can load (a kernel without vhost support drops two)
        self.kernel_modules = {"overlay", "br_netfilter", "vhost_vsock", "vhost_net"}

    def cmd_modinfo(self, argv: List[str]) -> CommandResult:
        """`modinfo -F filename NAME` of the real kernel's module list (kmod 30's answers:
        tests/unit/fixtures/probes/modinfo)."""
        name = module_name(argv[-1])
        if name not in self.kernel_modules:
            return self.fail(argv, f"modinfo: ERROR: Module {argv[-1]} not found.\n")
        if kernel_modules().get(name):
            return self.ok(argv, "(builtin)\n")
        return self.ok(argv, f"/lib/modules/{KERNEL_RELEASE}/kernel/{name}.ko\n")

    def repo_offers(self) -> Set[str]:
        offered = super().repo_offers()
        if self.deb and "pkgs.k8s.io/core:/stable:/" not in self.apt_index:
            offered -= REPO_PACKAGES["/etc/apt/sources.list.d/kubernetes.list"]  # not updated
        return offered

    # --- dispatch: what counts as a change on this host ---
    def mutating(self, argv: Sequence[str]) -> bool:
        if list(argv[:2]) == ["apt-mark", "showhold"] or list(argv[-2:]) == ["config", "dump"]:
            return False
        if list(argv) == ["containerd", "--version"]:
            return False
        if argv[0] == "kubectl" and ("--dry-run=server" in argv or "version" in argv):
            return False
        if list(argv[:2]) == ["kubeadm", "version"] or list(argv[:3]) == [
            "kubeadm", "upgrade", "plan"
        ]:
            return False
        if os.path.basename(argv[0]) in self.READ_ONLY:
            return False
        return super().mutating(argv)

    def unit_exists(self, unit: str) -> bool:
        if unit in {PACKAGE_UNITS[p] for p in self.state.packages if p in PACKAGE_UNITS}:
            return True
        return super().unit_exists(unit)

    # --- packages -------------------------------------------------------------
    def _spec(self, item: str) -> Tuple[str, str]:
        if "=" in item:
            name, version = item.split("=", 1)
            return name, version
        match = re.match(r"^(kubelet|kubeadm|kubectl)-(\d[\d.]*)$", item)
        if match:
            return match.group(1), match.group(2) + "-150500.1.1"
        if item in KUBE_PACKAGES:
            return item, ("1.5.1-1.1" if self.deb else "1.5.1-150500.1.1")
        return item, "1.0-1"

    def repo_minor(self, item: str) -> str:
        """The pkgs.k8s.io repository that holds a package spec: each minor has its own
        (kubelet=1.36.4-1.1 only in .../v1.36/deb/); an unpinned name is in any."""
        match = re.match(r"^(?:kubelet|kubeadm|kubectl)[=-](\d+)\.(\d+)\.", item)
        minor = f"v{match.group(1)}.{match.group(2)}/" if match else ""
        return f"pkgs.k8s.io/core:/stable:/{minor}" + ("deb/" if match else "")

    def cmd_apt_get(self, argv: List[str]) -> CommandResult:
        if argv[1] == "update":
            keyring = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
            listed = self.p("/etc/apt/sources.list.d/kubernetes.list")
            text = listed.read_text() if listed.exists() else ""
            signed = f"signed-by={keyring}" in text and self.p(keyring).exists()
            self.apt_index = text if signed else ""
            return self.ok(argv)
        if argv[1] != "install":
            return super().cmd_apt_get(argv)
        items = apt_operands(argv[2:])
        refused = self.apt_refuses(argv, items)
        if refused:
            return refused
        for item in items:
            name, version = self._spec(item)
            if name in KUBE_PACKAGES and self.repo_minor(item) not in self.apt_index:
                return self.fail(argv, f"E: Unable to locate package {name}", 100)
            old = self.state.packages.get(name)
            changes_held = name in self.holds and old and old != version
            if changes_held and "--allow-change-held-packages" not in argv:
                return self.fail(argv, "E: Held packages were changed and -y was used", 100)
        return self._install_all(items)

    def cmd_yum(self, argv: List[str]) -> CommandResult:
        if argv[1] != "install":
            return super().cmd_yum(argv)
        items = [a for a in argv[2:] if not a.startswith("-")]
        for item in items:
            name, _ = self._spec(item)
            repo = self.p("/etc/yum.repos.d/kubernetes.repo")
            if name in KUBE_PACKAGES and not (
                repo.exists() and "--disableexcludes=kubernetes" in argv
                and self.repo_minor(item).replace("/deb/", "/rpm/") in repo.read_text()
            ):
                return self.fail(argv, f"Error: Unable to find a match: {item}")
            if name == "containerd.io" and not self.p("/etc/yum.repos.d/docker-ce.repo").exists():
                return self.fail(argv, f"Error: Unable to find a match: {item}")
        return self.dnf_refuses(argv, items) or self._install_all(items)

    cmd_dnf = cmd_yum

    def _install_all(self, items: List[str]) -> CommandResult:
        for item in items:
            name, version = self._spec(item)
            if "/" in item and package_file_name(item)[0] in PACKAGE_FILES:
                name, version = package_file_name(item)  # a bundle's .deb/.rpm: as by name
            elif "/" in item:
                super()._install([item])
                continue
            self.state.packages[name] = version
            for path in PACKAGE_FILES.get(name, []):
                self.write(path, f"#!/bin/sh\n# {name} {version}\n", 0o755)
            if name == "containerd.io" and not self.p(CONFIG).exists():
                self.write(CONFIG, DOCKER_CONTAINERD_CONFIG)  # %config(noreplace)
            if self.deb and name == "containerd":  # the deb's postinst starts it
                unit = self.state.units.setdefault("containerd.service", UnitState())
                unit.enabled = True
                self._start_containerd()
            if self.deb and name == "kubelet":
                self.state.units.setdefault("kubelet.service", UnitState()).enabled = True
        return self.ok(["install", *items])

    def cmd_apt_mark(self, argv: List[str]) -> CommandResult:
        if argv[1] == "showhold":
            return self.ok(argv, "".join(f"{name}\n" for name in sorted(self.holds)))
        if argv[1] == "hold":
            self.holds += [name for name in argv[2:] if name not in self.holds]
        if argv[1] == "unhold":
            self.holds = [name for name in self.holds if name not in argv[2:]]
        return self.ok(argv)

    def cmd_gpg(self, argv: List[str]) -> CommandResult:
        source = Path(argv[-1]).read_bytes()
        match = re.search(rb"sim-fingerprint: (\w+)", source)
        if match is None:
            return self.fail(argv, "gpg: no valid OpenPGP data found.", 2)
        if "--show-keys" in argv:
            fpr = match.group(1).decode()
            expires = re.search(rb"sim-expires: (\d*)", source)
            until = expires.group(1).decode() if expires else ""
            return self.ok(
                argv,
                f"pub:-:2048:1:234654DA9A296436:1661385600:{until}::-:::scSC::::::23::0:\n"
                f"fpr:::::::::{fpr}:\n",
            )
        if "--dearmor" in argv:
            Path(argv[argv.index("--output") + 1]).write_bytes(b"\x99binary:" + source)
            return self.ok(argv)
        return self.fail(argv, "gpg: unsupported in the simulation")

    # --- files --------------------------------------------------------------
    def cmd_ln(self, argv: List[str]) -> CommandResult:
        target, link = argv[-2], self.p(argv[-1])
        if link.is_symlink() or link.exists():
            link.unlink()
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link)
        return self.ok(argv)

    def cmd_mkdir(self, argv: List[str]) -> CommandResult:
        self.p(argv[-1]).mkdir(parents=True, exist_ok=True)
        return self.ok(argv)

    def resolve(self, target: str) -> Path:
        """A target path with its symlinks followed inside the root."""
        path = self.p(target)
        for _ in range(10):
            if not path.is_symlink():
                return path
            link = os.readlink(path)
            path = self.p(link) if link.startswith("/") else path.parent / link
        return path

    def cmd_containerd_shim_kata_v2(self, argv: List[str]) -> CommandResult:
        if not self.resolve(argv[0]).is_file():
            return self.fail(argv, f"{argv[0]}: No such file or directory", 127)
        if argv[1:] != ["--version"]:  # the Go shim's main.go: only this exact form
            return self.fail(argv, "containerd-shim-kata-v2: start/delete need -id", 1)
        return self.ok(
            argv,
            'Kata Containers containerd shim (Golang): id: "io.containerd.kata.v2", '
            "version: 3.32.0, commit: 0000000\n",
        )

    # --- containerd -----------------------------------------------------------
    def effective_config(self) -> Tuple[Optional[Dict[str, Any]], str]:
        """What containerd makes of its files (None and the error when it cannot)."""
        if self.containerd_release[0] >= 2:
            return self._effective_config_2x()
        merged: Dict[str, Any] = {"version": 2, "disabled_plugins": [], "plugins": {}}
        main = self.p(CONFIG)
        try:
            config = tomllib.loads(main.read_text()) if main.exists() else {}
        except tomllib.TOMLDecodeError as error:
            return None, f"failed to load TOML from {CONFIG}: {error}"
        if not isinstance(config.get("imports", []), list):
            return None, "failed to unmarshal TOML: Can't convert imports(string) to []string"
        if config.get("version", 1) > 2:  # 1.x's ValidateV2
            return None, f"unsupported config version `{config['version']}`"
        merge_containerd(merged, config)
        if config.get("version", 1) != 2:
            merged["version"] = 1  # version 1 names plugins "cri": no imported v2 section applies
            merged["plugins"] = {}
            return merged, ""
        for path in self._imports(CONFIG, config, {CONFIG}):
            try:
                merge_containerd(merged, tomllib.loads(self.p(path).read_text()))
            except tomllib.TOMLDecodeError as error:
                return None, f"failed to load TOML from {path}: {error}"
        return merged, ""

    def _imports(self, parent: str, config: Dict[str, Any], seen: set) -> List[str]:
        found = []
        for pattern in config.get("imports", []):
            if not pattern.startswith("/"):
                pattern = f"{os.path.dirname(parent)}/{pattern}"
            directory, name = os.path.split(pattern)
            folder = self.p(directory)
            if "*" in name:
                entries = os.listdir(folder) if folder.is_dir() else []
                matches = sorted(e for e in entries if fnmatch.fnmatch(e, name))
            else:
                matches = [name]
            for entry in matches:
                path = f"{directory}/{entry}"
                if path not in seen:
                    seen.add(path)
                    found.append(path)
        return found

    def _effective_config_2x(self) -> Tuple[Optional[Dict[str, Any]], str]:
        """containerd 2.x's LoadConfig and dump: each file read (a version 1 file
        migrated to the version so far), merged table by table, the result
        migrated from the version of the last file that named one to 3."""
        merged: Dict[str, Any] = {"version": 3, "disabled_plugins": [], "plugins": {}}
        pending, seen = [CONFIG], {CONFIG}
        while pending:
            path = pending.pop(0)
            if not self.p(path).exists():
                if path == CONFIG:
                    break  # `config dump` ignores a missing main config
                return None, f"open {path}: no such file or directory"
            try:
                config = tomllib.loads(self.p(path).read_text())
            except tomllib.TOMLDecodeError as error:
                return None, f"failed to unmarshal TOML: {error}"
            if not isinstance(config.get("imports", []), list):
                return None, (
                    "failed to unmarshal TOML: toml: cannot decode TOML string into struct "
                    "field config.Config.Imports of type []string"
                )
            if config.get("version", 0) in (0, 1):
                config = _v1_migrate(config)
                config["version"] = merged["version"]
            _merge_2x(merged, config)
            pending += self._imports(path, config, seen)
        if merged["version"] > 3:
            return None, (
                "expected containerd config version equal to or less than `3`, "
                f"got `{merged['version']}`"
            )
        if merged["version"] < 3:
            _cri_migrate(merged["plugins"])
        merged["version"] = 3
        return merged, ""

    def cri_enabled(self) -> bool:
        loaded = self.containerd_loaded
        return loaded is not None and not CRI_NAMES & set(loaded.get("disabled_plugins", []))

    def _start_containerd(self) -> Optional[str]:
        config, error = self.effective_config()
        if config is None:
            self.state.units.setdefault("containerd.service", UnitState()).active = False
            self.p(SOCKET).unlink(missing_ok=True)
            return error
        self.containerd_loaded = config
        unit = self.state.units.setdefault("containerd.service", UnitState())
        unit.active, unit.starts = True, unit.starts + 1
        self.write(SOCKET, "")
        return None

    def cmd_systemctl(self, argv: List[str]) -> CommandResult:
        if argv[1] in ("start", "restart") and argv[2] == "containerd.service":
            if not self.unit_exists(argv[2]):
                return super().cmd_systemctl(argv)
            unit = self.state.units.setdefault("containerd.service", UnitState())
            if argv[1] == "start" and unit.active:
                return self.ok(argv)
            error = self._start_containerd()
            if error:
                return self.fail(argv, f"Job for containerd.service failed: {error}")
            return self.ok(argv)
        result = super().cmd_systemctl(argv)
        if argv[1] == "restart" and argv[2] == "kubelet.service" and result.ok:
            self.kubelet_started()
        if argv[1] == "stop" and argv[2] == "containerd.service":
            self.p(SOCKET).unlink(missing_ok=True)
        return result

    def cmd_ctr(self, argv: List[str]) -> CommandResult:
        running = self.state.units.get("containerd.service", UnitState()).active
        if not (running and self.p(argv[argv.index("--address") + 1]).exists()):
            return self.fail(argv, "ctr: failed to dial: connection refused")
        return self.ok(argv, "Client:\n  Version:  1.7.24\n\nServer:\n  Version:  1.7.24\n")

    def cmd_containerd(self, argv: List[str]) -> CommandResult:
        if argv[1:] == ["--version"]:
            return self.ok(argv, self.containerd_version_output + "\n")
        if argv[-2:] != ["config", "dump"]:
            return self.fail(argv, "unsupported in the simulation")
        config, error = self.effective_config()
        if config is None:
            return self.fail(argv, f"containerd: {error}")
        return self.ok(argv, toml_text(config) + "\n")

    # --- Kubernetes -------------------------------------------------------------
    # kubeadm 1.31 reads v1beta3 (deprecated) and v1beta4, and lets node-name,
    # print-join-command and a few more stand beside --config (validation.go isAllowedFlag)
    KUBEADM_SCHEMAS = ("kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4")
    KUBEADM_WITH_CONFIG = SimRunner.KUBEADM_WITH_CONFIG + (
        "node-name", "kubeconfig-dir", "upload-certs", "print-join-command", "log-file",
    )  # fmt: skip

    def package_release(self, name: str) -> str:
        """v1.35.9 for the installed package 1.35.9-1.1 ("" when not installed)."""
        found = self.state.packages.get(name, "")
        return "v" + found.split("-")[0] if found else ""

    def node_name(self) -> str:
        return self.p("/proc/sys/kernel/hostname").read_text().strip().lower()

    def kubelet_started(self) -> None:
        """The running kubelet reports its release in the node's status.nodeInfo."""
        node = self.state.cluster.nodes.get(self.node_name())
        if node is not None:
            node["status"].setdefault("nodeInfo", {})["kubeletVersion"] = (
                self.package_release("kubelet")
            )

    def write_control_plane(self, version: str) -> None:
        """kubeadm's static pod manifests: the image tag is the release."""
        for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            path = self.p(f"/etc/kubernetes/manifests/{component}.yaml")
            text = path.read_text() if path.exists() else ""
            text = re.sub(r"    image: \S+\n", "", text)
            self.write(str(path.relative_to(self.root)), text + (
                f"    image: registry.k8s.io/{component}:{version}\n"
            ))
        self.state.cluster.version = version  # type: ignore[attr-defined]

    def kubeadm_upgrade(self, argv: List[str]) -> CommandResult:
        """kubeadm upgrade plan|apply|node as kubeadm's version policy judges them
        (cmd/kubeadm/app/phases/upgrade/policy.go EnforceVersionPolicies)."""
        from frakti_install.versions import parse

        cluster = getattr(self.state.cluster, "version", "")
        kubeadm = self.package_release("kubeadm")
        if argv[2] == "node":
            if not self.p("/etc/kubernetes/kubelet.conf").exists():
                return self.fail(argv, "couldn't create a Kubernetes client: kubelet.conf missing")
            self.node_upgrades.append(kubeadm)
            return self.ok(argv, "[upgrade] The configuration for this node was successfully "
                           "updated!\n")
        if not self.p("/etc/kubernetes/admin.conf").exists():
            return self.fail(argv, "[upgrade/config] FATAL: admin.conf: no such file")
        words = [a for a in argv[3:] if not a.startswith("-")]
        wanted = words[0] if words else kubeadm
        mandatory, skippable = [], []
        if parse(wanted)[1] > parse(cluster)[1] + 1:
            mandatory.append(f'Specified version to upgrade to "{wanted}" is too high; kubeadm '
                             "can upgrade only 1 minor version at a time")
        if parse(kubeadm) < parse(wanted):
            if parse(wanted)[1] > parse(kubeadm)[1]:
                mandatory.append(
                    f'Specified version to upgrade to "{wanted}" is at least one minor release '
                    f"higher than the kubeadm minor release ({parse(wanted)[1]} > "
                    f"{parse(kubeadm)[1]}). Such an upgrade is not supported")
            else:
                skippable.append(
                    f'Specified version to upgrade to "{wanted}" is higher than the kubeadm '
                    f'version "{kubeadm}". Upgrade kubeadm first using the tool you used to '
                    "install kubeadm")
        head = (f"[upgrade/versions] Cluster version: {cluster}\n"
                f"[upgrade/versions] kubeadm version: {kubeadm}\n")
        if mandatory or (skippable and "--force" not in argv):
            errors = "".join(f"\t- {e}\n" for e in mandatory + skippable)
            return CommandResult(argv, 1, head, "[upgrade/version] FATAL: the --version argument "
                                 f"is invalid due to these errors:\n\n{errors}")
        if argv[2] == "plan":
            return self.ok(argv, head + "You can now apply the upgrade by executing the following "
                           f"command:\n\n\tkubeadm upgrade apply {wanted}\n")
        if not {"-y", "--yes", "-f", "--force"} & set(argv):
            return self.fail(argv, "won't proceed; the user didn't answer (Y|y) in order to "
                             "continue")
        self.write_control_plane(wanted)
        return self.ok(argv, head + f'[upgrade/successful] SUCCESS! Your cluster was upgraded to '
                       f'"{wanted}". Enjoy!\n')

    def cmd_kubeadm(self, argv: List[str]) -> CommandResult:
        if argv[1:] == ["version", "-o", "short"]:
            return self.ok(argv, self.package_release("kubeadm") + "\n")
        if argv[1] == "upgrade" and argv[2:3] in (["plan"], ["apply"], ["node"]):
            return self.kubeadm_upgrade(argv)
        argv, error = self.kubeadm_argv(argv)
        if error:
            return self.fail(argv, error)
        argv = [a.replace("--cri-socket=unix://", "--cri-socket=") for a in argv]
        if argv[1] in ("init", "join") and not self.cri_enabled():
            return self.fail(
                argv, "[ERROR CRI]: unknown service runtime.v1.RuntimeService (CRI disabled)"
            )
        if argv[1] == "init":
            flags = dict(a[2:].split("=", 1) for a in argv[2:] if a.startswith("--") and "=" in a)
            kubeadm = self.state.packages.get("kubeadm", "")
            wanted = flags.get("kubernetes-version", "").lstrip("v")
            if not kubeadm.startswith(wanted.rsplit(".", 1)[0] + "."):
                return self.fail(argv, f"kubeadm {kubeadm or '(none)'} cannot install {wanted}")
        result = super().cmd_kubeadm(argv)
        if argv[1] == "init" and result.ok:
            self.write_control_plane(flags.get("kubernetes-version", ""))
        if argv[1] in ("init", "join") and result.ok:
            self.kubelet_started()
        if argv[1] == "init" and result.ok:
            for node in self.state.cluster.nodes.values():  # kubeadm >= 1.24's taint
                node["spec"]["taints"] = [
                    {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
                ]
        return result

    def cmd_kubectl(self, argv: List[str]) -> CommandResult:
        kubeconfig = argv[argv.index("--kubeconfig") + 1]
        up = bool(self.state.cluster.nodes) and self.p(kubeconfig).exists()
        verb = argv[3] if len(argv) > 3 else ""
        if verb in ("version", "drain", "uncordon") and not up:
            return self.fail(argv, "The connection to the server localhost:6443 was refused")
        if verb == "version":
            return self.ok(argv, json.dumps({
                "clientVersion": {"gitVersion": self.package_release("kubectl")},
                "serverVersion": {"gitVersion": getattr(self.state.cluster, "version", "")},
            }))
        if verb in ("drain", "uncordon"):
            name = argv[4]
            node = self.state.cluster.nodes.get(name)
            if node is None:
                return self.fail(argv, f'Error from server (NotFound): nodes "{name}" not found')
            if kubeconfig == "/etc/kubernetes/kubelet.conf":  # the node authorizer
                return self.fail(argv, f'nodes "{name}" is forbidden: User "system:node:{name}" '
                                 "cannot patch resource \"nodes\"")
            if verb == "drain" and "--ignore-daemonsets" not in argv:
                return self.fail(argv, "error: cannot delete DaemonSet-managed Pods (use "
                                 "--ignore-daemonsets to ignore)")
            node["spec"]["unschedulable"] = verb == "drain"
            if verb == "uncordon":
                node["spec"].pop("unschedulable")
                return self.ok(argv, f"node/{name} uncordoned\n")
            return self.ok(argv, f"node/{name} cordoned\nnode/{name} drained\n")
        if "runtimeclass" in argv and "get" in argv:
            if not up:
                return self.fail(argv, "The connection to the server localhost:6443 was refused")
            name = argv[argv.index("runtimeclass") + 1]
            if name not in self.runtime_classes:
                return self.fail(
                    argv,
                    f'Error from server (NotFound): runtimeclasses.node.k8s.io "{name}" not found',
                )
            return self.ok(argv, json.dumps(self.runtime_classes[name]))
        if "apply" not in argv:
            return super().cmd_kubectl(argv)
        if not up:
            return self.fail(argv, "The connection to the server localhost:6443 was refused")
        obj = yaml.safe_load(self.last_input or "")
        name = obj["metadata"]["name"]
        if obj["kind"] == "RuntimeClass":
            old = self.runtime_classes.get(name)
            if old is not None and old["handler"] != obj["handler"]:
                return self.fail(argv, "The RuntimeClass is invalid: handler: field is immutable")
            self.runtime_classes[name] = obj
            return self.ok(argv, f"runtimeclass.node.k8s.io/{name} configured\n")
        if obj["kind"] == "Pod" and "--dry-run=server" in argv:
            wanted = obj["spec"].get("runtimeClassName")
            runtime_class = self.runtime_classes.get(wanted) if wanted else None
            if wanted and runtime_class is None:
                return self.fail(
                    argv,
                    f'Error from server (Forbidden): error when creating "STDIN": pods "{name}" '
                    f'is forbidden: pod rejected: RuntimeClass "{wanted}" not found',
                )
            pod = json.loads(json.dumps(obj))
            if runtime_class and runtime_class.get("overhead"):
                pod["spec"]["overhead"] = runtime_class["overhead"]["podFixed"]
            return self.ok(argv, json.dumps(pod))
        return self.fail(argv, "unsupported in the simulation")


def kata_checksums() -> Dict[str, str]:
    return {"kata": hashlib.sha256(kata_tarball()).hexdigest()}


class KataSimMachine(SimMachine):
    """A fresh host of one kata system: cgroup v2 by default, KVM usable."""

    def __init__(
        self, root: Path, os_id: str, version: str, *, cgroup: int = 2, **kwargs: Any
    ) -> None:
        super().__init__(root, os_id, version, cgroup=cgroup, **kwargs)
        deb = os_id in ("ubuntu", "debian")
        self.kata = KataSimRunner(root, self.state, kwargs.get("ip", "10.0.0.1"), deb=deb)
        packaged = f"{os_id}-{version}"  # a release of its own, else the family's
        if packaged not in CONTAINERD_RELEASES:
            packaged = os_id if deb else "containerd.io"
        self.kata.containerd_release, self.kata.containerd_version_output = CONTAINERD_RELEASES[
            packaged
        ]
        self.kata.system = (os_id, version)
        if os_id == "ubuntu":  # no captured list: the release this sim installs
            self.kata.candidate_versions["containerd"] = "{}.{}.{}-0ubuntu1".format(
                *self.kata.containerd_release
            )
        self.runner = self.kata
        self.kata._refresh_ports()
        self.downloader = KataSimDownloader(root / "var/cache/sim")

    def settings(self, **overrides: Any) -> Settings:
        """Validated as config.py does, with the kata profile and its checksum
        (a checksum given as "" is left out: none given)."""
        from frakti_install import config

        values: Dict[str, Any] = {"runtime": "kata", **overrides}
        merged = {**kata_checksums(), **overrides.get("checksums", {})}
        values["checksums"] = {name: value for name, value in merged.items() if value}
        return config.validate(Settings(**values))

    def snapshot(self) -> Dict[str, str]:
        files = super().snapshot()
        links = []
        for top in ("etc", "usr", "opt"):
            for path in sorted(self.p(top).rglob("*")) if self.p(top).exists() else []:
                if path.is_symlink():
                    links.append(f"{path.relative_to(self.root)}->{os.readlink(path)}")
        files["#symlinks"] = ",".join(links)
        files["#holds"] = ",".join(sorted(self.kata.holds))
        files["#runtimeclasses"] = json.dumps(self.kata.runtime_classes, sort_keys=True)
        files["#containerd-loaded"] = json.dumps(self.kata.containerd_loaded, sort_keys=True)
        files["#versions"] = json.dumps(self.state.packages, sort_keys=True)
        return files


# --- the Kubernetes package repository as a connected machine sees it ------------
# What pkgs.k8s.io's v1.35 repository offers (the sim's): name -> deb version; the
# rpm's release is 150500.1.1 instead of 1.1.
REPO_VERSIONS = {
    "kubelet": "1.35.9-1.1",
    "kubeadm": "1.35.9-1.1",
    "kubectl": "1.35.9-1.1",
    "kubernetes-cni": "1.7.1-1.1",
    "cri-tools": "1.35.0-1.1",
}


def package_file_name(path: str) -> Tuple[str, str]:
    """NAME_VERSION_ARCH.deb / NAME-VERSION-RELEASE.ARCH.rpm -> (name, version)."""
    base = os.path.basename(path)
    if base.endswith(".deb"):
        name, version, _ = base.split("_")
        return name, version
    name, version, release = base[: -len(".rpm")].rsplit("-", 2)
    return name, f"{version}-{release.rsplit('.', 1)[0]}"


def repo_package_bytes(filename: str) -> bytes:
    return f"package file {filename} of the sim's pkgs.k8s.io\n".encode()


class ConnectedRunner(KataSimRunner):
    """A connected machine making a kata bundle: gpg, and apt-get/dnf against the
    sim's pkgs.k8s.io. apt-get download writes NAME_VERSION_ARCH.deb into the
    current directory (apt-get(8): "download the given binary package into the
    current directory"); dnf download writes into --destdir. Both refuse to run
    before the repository is known and signed with the key given."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, SimState(), deb=True)
        self.cwd: Optional[str] = None
        self.updated: Optional[str] = None  # the sources list apt last updated from
        self.served: List[str] = []  # the package files written

    @staticmethod
    def _apt_options(argv: Sequence[str]) -> Dict[str, str]:
        return dict(
            argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "-o"
        )

    def cmd_env(self, argv: List[str]) -> CommandResult:
        rest = list(argv[1:])
        if rest and rest[0].startswith("--chdir="):
            self.cwd = rest.pop(0).split("=", 1)[1]
        try:
            return self(rest, None, None, None)
        finally:
            self.cwd = None

    def cmd_apt_get(self, argv: List[str]) -> CommandResult:
        options = self._apt_options(argv)
        words = apt_operands(argv[1:])
        sources = Path(options.get("Dir::Etc::SourceList", "/etc/apt/sources.list"))
        if words[0] == "update":
            text = sources.read_text() if sources.exists() else ""
            keyring = re.search(r"signed-by=(\S+)\]", text)
            if not keyring or not Path(keyring.group(1)).read_bytes().startswith(b"\x99binary:"):
                return self.fail(argv, "W: GPG error: ... NO_PUBKEY 234654DA9A296436\n", 100)
            self.updated = text
            return self.ok(argv)
        if words[0] != "download":
            return self.fail(argv, "unsupported in the simulation")
        if not self.updated or "pkgs.k8s.io/core:/stable:/v1.35/deb/" not in self.updated:
            return self.fail(argv, f"E: Unable to locate package {words[1]}\n", 100)
        arch = options.get("APT::Architecture", "amd64")
        wanted = []
        for spec in words[1:]:
            name, _, version = spec.partition("=")
            if name not in REPO_VERSIONS:
                return self.fail(argv, f"E: Unable to locate package {name}\n", 100)
            if version and version != REPO_VERSIONS[name]:
                return self.fail(argv, f"E: Version '{version}' for '{name}' was not found\n", 100)
            wanted.append(f"{name}_{REPO_VERSIONS[name]}_{arch}.deb")
        assert self.cwd, "apt-get download writes into the current directory"
        for filename in wanted:
            Path(self.cwd, filename).write_bytes(repo_package_bytes(filename))
            self.served.append(filename)
        return self.ok(argv)

    def cmd_dnf(self, argv: List[str]) -> CommandResult:
        if "download" not in argv:
            return self.fail(argv, "unsupported in the simulation")
        settings = dict(
            a[len("--setopt="):].split("=", 1) for a in argv if a.startswith("--setopt=")
        )
        repo = Path(settings["reposdir"], "kubernetes.repo")
        text = repo.read_text() if repo.exists() else ""
        key = re.search(r"gpgkey=file://(\S+)", text)
        if "pkgs.k8s.io/core:/stable:/v1.35/rpm/" not in text or not key:
            return self.fail(argv, "Error: Unknown repo: 'kubernetes'\n")
        dest = next(a.split("=", 1)[1] for a in argv if a.startswith("--destdir="))
        arch = next(a.split("=", 1)[1] for a in argv if a.startswith("--forcearch="))
        specs = argv[argv.index("download") + 1:]
        for spec in (s for s in specs if not s.startswith("-")):
            match = re.match(r"^(.+?)(?:-(\d[\d.]*))?$", spec)
            assert match
            name, version = match.group(1), match.group(2)
            offered = REPO_VERSIONS.get(name, "")
            if not offered or (version and not offered.startswith(version + "-")):
                return self.fail(argv, f"No package {spec} available.\nError: No packages found\n")
            filename = f"{name}-{REPO_VERSIONS[name].split('-')[0]}-150500.1.1.{arch}.rpm"
            Path(dest, filename).write_bytes(repo_package_bytes(filename))
            self.served.append(filename)
        return self.ok(argv)
