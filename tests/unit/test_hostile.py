"""Hostile input (issue 16): each bad value a user can type, in a config file, the
environment, a flag, a join line or a bundle, is refused with its documented exit
code and a message that names it and says the fix; no traceback; and the simulated
host is left as it was: the same files, and not one command that changes anything."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml
from typer.testing import CliRunner

from frakti_install import cli, session, versions
from frakti_install.artifacts import Artifacts
from frakti_install.bundle import Bundle, create_bundle, os_packages_for
from frakti_install.config import FIELDS, Settings
from frakti_install.errors import ExitCode
from tests.unit.simhost import SimMachine, given_checksums

runner = CliRunner()
CONFIG, CHECKSUM, USAGE, PREFLIGHT = (
    ExitCode.CONFIG, ExitCode.CHECKSUM, ExitCode.USAGE, ExitCode.PREFLIGHT,
)  # fmt: skip
TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "a" * 64
JOIN = ("--join", "10.0.0.9:6443", "--token", TOKEN, "--discovery-token-ca-cert-hash", CA_HASH)


@dataclass(frozen=True)
class Case:
    """What a user typed, and what the tool must answer."""

    id: str
    code: int
    names: str  # the input, as the message must name it
    fix: str  # words of the fix the message must give
    args: Tuple[str, ...] = ()  # flags after the command
    config: str = ""  # YAML added to a config file that is otherwise good
    raw: Optional[bytes] = None  # or the whole config file, as bytes
    env: Dict[str, str] = field(default_factory=dict)
    command: str = "allinone"
    bundle: str = ""  # a bundle made by BUNDLES[bundle]
    config_path: str = ""  # -c this path (under the test's directory) instead
    host: Dict[str, object] = field(default_factory=dict)  # SimMachine's keywords


def settings_key_cases() -> List[Case]:
    """A value of the wrong type for every key of the settings schema."""
    cases = []
    for name, spec in FIELDS.items():
        default = spec.default if spec.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            wrong: object = "maybe"
        elif isinstance(default, int):
            wrong = [1, 2]
        elif isinstance(default, tuple):
            wrong = {"a": 1}
        elif spec.default is dataclasses.MISSING:  # a mapping (default_factory)
            wrong = [1, 2]
        else:
            wrong = {"a": [1]}
        text = yaml.safe_dump({name: wrong})
        cases.append(Case(f"config-type-{name}", CONFIG, f"{name}:", "Write it like", config=text))
    return cases


def env(name: str, value: str) -> Dict[str, str]:
    return {f"FRAKTI_INSTALL_{name.upper()}": value}


def env_case(id: str, name: str, value: str, fix: str = "Write it like") -> Case:
    return Case(id, CONFIG, f"FRAKTI_INSTALL_{name.upper()}", fix, env=env(name, value))


def flag_case(id: str, flags: Tuple[str, ...], names: str, fix: str, code: int = CONFIG,
              command: str = "allinone") -> Case:  # fmt: skip
    return Case(id, code, names, fix, args=flags, command=command)


# "billion laughs": ten anchors, each a list of eight of the one before (8**10 leaves)
BOMB = "  - &a [x, x, x, x, x, x, x, x]\n" + "".join(
    f"  - &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 8)}]\n" for i in range(9)
)

CASES: List[Case] = [
    *settings_key_cases(),
    # --- config files
    Case("config-int-for-list", CONFIG, "ignore_preflight_errors:", "[Swap, KVM]",
         config="ignore_preflight_errors: 5\n"),
    Case("config-int-key", CONFIG, "1 is not a setting name", "Keys are setting names",
         raw=b"1: x\n"),
    Case("config-null-key", CONFIG, "None is not a setting name", "Keys are setting names",
         raw=b"~: x\n"),
    Case("config-unknown-key", CONFIG, "unknown setting(s) 'pod_cdir'", "Did you mean pod_cidr?",
         config="pod_cdir: 10.244.0.0/16\n"),
    Case("config-dashed-key", CONFIG, "'pod-cidr'", "Did you mean pod_cidr?",
         config="pod-cidr: 10.244.0.0/16\n"),
    Case("config-latin1", CONFIG, "is not UTF-8 text", "Save it as UTF-8",
         raw="pod_cidr: 10.244.0.0/16 # café\n".encode("latin-1")),
    Case("config-utf16", CONFIG, "is not UTF-8 text", "Save it as UTF-8",
         raw="pod_cidr: 10.244.0.0/16\n".encode("utf-16")),
    Case("config-top-level-list", CONFIG, "must hold a mapping of settings", "name: value",
         raw=b"- pod_cidr\n- 10.244.0.0/16\n"),
    Case("config-top-level-scalar", CONFIG, "must hold a mapping of settings", "name: value",
         raw=b"just some words\n"),
    Case("config-not-yaml", CONFIG, "is not valid YAML", "Fix the place", raw=b"pod_cidr: [\n"),
    Case("config-tab-indent", CONFIG, "is not valid YAML", "Fix the place",
         raw=b"mirrors:\n\tgithub: http://m\n"),
    Case("config-python-tag", CONFIG, "is not valid YAML", "Fix the place",
         raw=b"pod_cidr: !!python/object/apply:os.system [id]\n"),
    Case("config-duplicate-key", CONFIG, "'pod_cidr' is given twice", "Fix the place",
         config="pod_cidr: 10.32.0.0/16\npod_cidr: 10.33.0.0/16\n"),
    Case("config-alias-bomb", CONFIG, "ignore_preflight_errors:", "Write it like",
         raw=("ignore_preflight_errors:\n" + BOMB).encode()),
    Case("config-alias-bomb-in-mirrors", CONFIG, "mirrors:", "Write it like",
         raw=("mirrors:\n  github:\n" + BOMB.replace("  -", "    -")).encode()),
    Case("config-alias-bomb-as-key", CONFIG, "is not valid YAML", "Fix the place",
         raw=("bomb:\n" + BOMB + "? *j\n: 1\n").encode()),
    Case("config-deep-nesting", CONFIG, "nests too deeply", "name: value",
         raw=b"pod_cidr: " + b"[" * 5000 + b"]" * 5000 + b"\n"),
    Case("config-huge-file", CONFIG, "is larger than 1024 KiB", "Is it the right file?",
         raw=b"# padding\n" * 200_000),
    Case("config-missing-file", CONFIG, "cannot read config file", "readable YAML file",
         config_path="no-such.yaml"),
    Case("config-directory", USAGE, "Invalid value for '--config'", "--help", config_path="."),
    Case("config-dangling-symlink", CONFIG, "cannot read config file", "readable YAML file",
         config_path="dangling.yaml"),
    Case("config-socket", CONFIG, "cannot read config file", "readable YAML file",
         config_path="sock.yaml"),
    Case("config-empty-pod-cidr", CONFIG, "pod_cidr: is empty", "Write it like pod_cidr:",
         config="pod_cidr:\n"),
    Case("config-bool-for-number", CONFIG, "lock_wait: must be a whole number", "lock_wait: 60",
         config="lock_wait: true\n"),
    Case("config-fraction-for-number", CONFIG, "node_ready_timeout: must be a whole number",
         "node_ready_timeout: 300", config="node_ready_timeout: 2.5\n"),
    Case("config-infinite-number", CONFIG, "node_ready_timeout: must be a whole number",
         "node_ready_timeout: 300", config="node_ready_timeout: .inf\n"),
    Case("config-date-for-text", CONFIG, "kubernetes_version: must be text", "v1.12.10",
         config="kubernetes_version: 2024-01-01\n"),
    Case("config-mirror-list", CONFIG, "mirrors: must be a mapping", "Write it like mirrors:",
         config="mirrors: [http://m]\n"),
    Case("config-mirror-value-list", CONFIG, "mirrors: 'github'", "Write it like mirrors:",
         config="mirrors: {github: [a, b]}\n"),
    Case("config-checksum-null", CONFIG, "checksums: 'frakti': None", "Write it like checksums:",
         config="checksums: {frakti: null}\n"),
    Case("config-relative-state-dir", CONFIG, "state_dir: 'state' is not an absolute path",
         "state_dir: /var/lib/frakti-install", config="state_dir: state\n"),
    Case("config-socket-with-newline", CONFIG, "frakti_socket:", "Write it like frakti_socket:",
         config='frakti_socket: "/var/run/f.sock\\nExecStart=/bin/sh"\n'),
    Case("config-feature-gates", CONFIG, "kubelet_feature_gates:", "AllAlpha=true",
         config='kubelet_feature_gates: "AllAlpha=true\\nKUBELET_EXTRA_ARGS=--x"\n'),
    Case("config-no-proxy-newline", CONFIG, "no_proxy:", "Write it like no_proxy:",
         config='no_proxy: "localhost\\nExecStartPre=/bin/sh"\n'),
    Case("config-version-set-float", CONFIG, "version_set: '1.1' is not a known version set",
         'version_set: "1.12"', config="version_set: 1.10\n"),
    Case("config-rich-markup", CONFIG, "'[/x]'", "Write it like mirrors:",
         config="mirrors: {github: '[/x]'}\n"),
    # --- the environment
    env_case("env-lock-wait-negative", "lock_wait", "-5"),
    env_case("env-lock-wait-garbage", "lock_wait", "many"),
    env_case("env-lock-wait-huge", "lock_wait", "99999999999999999999"),
    env_case("env-node-ready-timeout-negative", "node_ready_timeout", "-5"),
    env_case("env-node-ready-timeout-zero", "node_ready_timeout", "0"),
    env_case("env-node-ready-timeout-float", "node_ready_timeout", "1e3"),
    env_case("env-streaming-port-zero", "streaming_port", "0"),
    env_case("env-streaming-port-too-big", "streaming_port", "70000"),
    env_case("env-routes-sync-garbage", "routes_sync_interval", "every 5 minutes",
             "A number and a unit"),
    env_case("env-routes-sync-zero", "routes_sync_interval", "0s", "A number and a unit"),
    env_case("env-routes-sync-huge", "routes_sync_interval", "99999999999h", "at most a day"),
    env_case("env-hyper-grpc-no-port", "hyper_grpc", "localhost", "hyperd's gRPC address"),
    env_case("env-hyper-grpc-port-range", "hyper_grpc", "127.0.0.1:99999"),
    env_case("env-hyper-grpc-empty-host", "hyper_grpc", ":22318"),
    env_case("env-hyper-grpc-bad-host", "hyper_grpc", "local host:22318"),
    env_case("env-pod-cidr-garbage", "pod_cidr", "garbage", "ADDRESS/PREFIX"),
    env_case("env-pod-cidr-host-bits", "pod_cidr", "10.244.0.1/16", "no host bits"),
    env_case("env-pod-cidr-ipv6", "pod_cidr", "fd00:10:244::/56", "IPv4"),
    env_case("env-pod-cidr-too-small", "pod_cidr", "10.244.0.0/28", "/16 to /23"),
    env_case("env-pod-cidr-too-large", "pod_cidr", "10.0.0.0/7", "/8 to /23"),
    env_case("env-pod-cidr-overlaps-services", "pod_cidr", "10.96.0.0/16", "do not overlap"),
    env_case("env-service-cidr-too-small", "service_cidr", "10.96.0.0/29", "/28 or larger"),
    env_case("env-service-cidr-ipv6", "service_cidr", "fd00::/108", "IPv4"),
    env_case("env-node-subnet-outside", "node_subnet", "10.99.1.0/24", "out of the cluster's"),
    env_case("env-cgroup-driver", "cgroup_driver", "cgroup", "Write it like"),
    env_case("env-runtime", "runtime", "gvisor", "frakti-install info"),
    env_case("env-version-set", "version_set", "0.1", "Write it like"),
    env_case("env-kubernetes-version", "kubernetes_version", "latest", "v1.12.10"),
    env_case("env-hyperd-version", "hyperd_version", "1.x", "1.1.0"),
    env_case("env-frakti-version", "frakti_version", "v1", "v1.12.0"),
    env_case("env-mirrors-no-equals", "mirrors", "github", "Write it like"),
    env_case("env-checksums-short", "checksums", "frakti=abc", "sha256sum"),
    env_case("env-key-fingerprints", "key_fingerprints", "kubernetes-key=XYZ", "gpg"),
    env_case("env-allow-unverified", "allow_unverified", "everything", "Write it like"),
    env_case("env-disable-swap", "disable_swap", "maybe", "Write it like"),
    env_case("env-advertise-address", "advertise_address", "10.0.0", "IPv4 addresses"),
    env_case("env-advertise-loopback", "advertise_address", "127.0.0.1", "IPv4 addresses"),
    env_case("env-node-ip-ipv6", "node_ip", "fe80::1", "IPv4 addresses"),
    env_case("env-http-proxy-scheme", "http_proxy", "ftp://proxy:21", "Write it like"),
    env_case("env-https-proxy-port", "https_proxy", "http://proxy:99999", "Write it like"),
    env_case("env-state-dir-relative", "state_dir", "relative/dir", "Write it like"),
    env_case("env-log-file-relative", "log_file", "install.log", "Write it like"),
    env_case("env-cache-dir-relative", "cache_dir", "cache", "Write it like"),
    env_case("env-frakti-socket-relative", "frakti_socket", "frakti.sock", "Write it like"),
    Case("env-proxy-variable", CONFIG, "HTTPS_PROXY", "Write it like",
         env={"HTTPS_PROXY": "http://proxy:99999"}),
    # --- command-line options
    flag_case("flag-kubernetes-version-garbage", ("--kubernetes-version", "garbage"),
              "--kubernetes-version", "--kubernetes-version v1.12.10"),
    flag_case("flag-kubernetes-version-too-new", ("--kubernetes-version", "v1.30.0"),
              "Kubernetes v1.30.0", "below 1.26"),
    flag_case("flag-kubernetes-version-minor-for-frakti", ("--kubernetes-version", "v1.12"),
              "--kubernetes-version 'v1.12' is a minor", "like v1.12.10"),
    flag_case("flag-kata-kubernetes-version-eol", ("--runtime", "kata", "--kubernetes-version",
              "v1.31"), "end of life", "--allow-eol"),
    flag_case("flag-kubernetes-version-other-minor", ("--kubernetes-version", "v1.11.10"),
              "works with Kubernetes 1.12.x only", "matching minors"),
    flag_case("flag-version-set-removed", ("--version-set", "1.9"), "--version-set",
              "Write it like --version-set 1.12"),
    flag_case("flag-version-set-unknown", ("--version-set", "0.1"), "--version-set",
              "Write it like --version-set 1.12"),
    flag_case("flag-runtime-unknown", ("--runtime", "gvisor"), "--runtime",
              "frakti-install info"),
    flag_case("flag-kata-old-kubernetes", ("--runtime", "kata", "--kubernetes-version", "1.12.10"),
              "older than the package repositories", "1.2"),
    flag_case("flag-mirror-no-equals", ("--mirror", "github"), "--mirror", "--mirror github="),
    flag_case("flag-mirror-unknown-kind", ("--mirror", "dockerhub=https://m"), "'dockerhub'",
              "--mirror github="),
    flag_case("flag-mirror-ftp", ("--mirror", "github=ftp://m/gh"), "'ftp://m/gh'",
              "Serve the mirror over HTTP(S)"),
    flag_case("flag-mirror-file-url", ("--mirror", "hyper=file:///srv/hyper"), "file:// URL",
              "--bundle FILE"),
    flag_case("flag-mirror-no-host", ("--mirror", "github=https://"), "names no host",
              "--mirror github="),
    flag_case("flag-mirror-bad-port", ("--mirror", "github=https://m:99999/gh"),
              "port out of range", "--mirror github="),
    flag_case("flag-mirror-markup", ("--mirror", "github=[/x]"), "'[/x]'", "--mirror github="),
    flag_case("flag-checksum-short", ("--checksum", "frakti=abc"), "--checksum", "sha256sum"),
    flag_case("flag-checksum-not-hex", ("--checksum", "frakti=" + "g" * 64), "--checksum",
              "sha256sum"),
    flag_case("flag-checksum-unknown-artifact", ("--checksum", "frak=" + "a" * 64), "'frak'",
              "--checksum frakti="),
    flag_case("flag-checksum-no-name", ("--checksum", "=" + "a" * 64), "--checksum",
              "--checksum frakti="),
    flag_case("flag-key-fingerprint-short", ("--key-fingerprint", "kubernetes-key=ABCD"),
              "--key-fingerprint", "gpg --show-keys"),
    flag_case("flag-key-fingerprint-unknown", ("--key-fingerprint", "frakti=" + "A" * 40),
              "is not a signing key", "--key-fingerprint kubernetes-key="),
    flag_case("flag-cgroup-driver", ("--cgroup-driver", "cgroup"), "--cgroup-driver",
              "--cgroup-driver auto"),
    flag_case("flag-advertise-not-ip", ("--advertise-address", "master.local"),
              "--advertise-address", "IPv4 addresses"),
    flag_case("flag-advertise-not-on-host", ("--advertise-address", "192.168.99.7"),
              "(--advertise-address): 192.168.99.7 is not an address of this host",
              "One of this host's IPv4 addresses"),
    flag_case("flag-node-ip-not-on-host", ("--node-ip", "192.168.99.8"),
              "node_ip (--node-ip): 192.168.99.8 is not an address of this host",
              "One of this host's IPv4 addresses"),
    flag_case("flag-pod-cidr-holds-host", ("--pod-cidr", "10.0.0.0/16"),
              "pod_cidr (--pod-cidr): 10.0.0.0/16 holds this host's address 10.0.0.1",
              "that none of this host's addresses or routes"),
    flag_case("flag-pod-cidr-holds-route", ("--pod-cidr", "192.168.0.0/16"),
              "pod_cidr (--pod-cidr): 192.168.0.0/16 overlaps the route to 192.168.5.0/24",
              "that none of this host's addresses or routes"),
    flag_case("flag-service-cidr-holds-host", ("--service-cidr", "10.0.0.0/24"),
              "service_cidr (--service-cidr): 10.0.0.0/24 holds this host's address 10.0.0.1",
              "that none of this host's addresses or routes"),
    flag_case("flag-ignore-preflight-unknown", ("--ignore-preflight-errors", "NoSuchCheck"),
              "NoSuchCheck", "Its checks:"),
    flag_case("flag-pod-cidr-28", ("--pod-cidr", "10.244.0.0/28"), "cannot hold a /24 per node",
              "/16 to /23"),
    flag_case("flag-node-subnet-host-bits", ("--node-subnet", "10.244.1.1/24"), "--node-subnet",
              "a /24 of the pod CIDR"),
    flag_case("flag-unknown-option", ("--pod-cdir", "10.0.0.0/16"), "--pod-cdir", "--help",
              code=USAGE),
    Case("hostname-not-rfc1123", PREFLIGHT, "the hostname 'node_1'", "hostnamectl set-hostname",
         host={"hostname": "node_1"}),
    # --- node --join
    flag_case("join-no-port", ("--join", "10.0.0.9", *JOIN[2:]), "--join", "join-command",
              command="node"),
    flag_case("join-port-zero", ("--join", "10.0.0.9:0", *JOIN[2:]), "--join", "join-command",
              command="node"),
    flag_case("join-port-too-big", ("--join", "10.0.0.9:65536", *JOIN[2:]), "--join",
              "join-command", command="node"),
    flag_case("join-url", ("--join", "https://10.0.0.9:6443", *JOIN[2:]), "--join",
              "join-command", command="node"),
    flag_case("join-newline", ("--join", "10.0.0.9:6443\nx", *JOIN[2:]), "--join",
              "join-command", command="node"),
    flag_case("join-bad-ipv6", ("--join", "[fe80::zz]:6443", *JOIN[2:]), "--join",
              "join-command", command="node"),
    flag_case("join-token-malformed", (*JOIN[:2], "--token", "not-a-token", *JOIN[4:]),
              "join token", "join-command", command="node"),
    flag_case("join-ca-hash-short", (*JOIN[:4], "--discovery-token-ca-cert-hash", "sha256:abc"),
              "--discovery-token-ca-cert-hash", "join-command", command="node"),
    flag_case("join-ca-hash-no-prefix", (*JOIN[:4], "--discovery-token-ca-cert-hash", "a" * 64),
              "--discovery-token-ca-cert-hash", "join-command", command="node"),
    flag_case("join-ca-hash-sha1",
              (*JOIN[:4], "--discovery-token-ca-cert-hash", "sha1:" + "a" * 40),
              "--discovery-token-ca-cert-hash", "join-command", command="node"),
    # --- offline bundles
    Case("bundle-not-a-tarball", CONFIG, "cannot read the bundle", "copy it again",
         bundle="not-a-tarball"),
    Case("bundle-truncated", CONFIG, "cannot read the bundle", "copy it again",
         bundle="truncated"),
    Case("bundle-missing", CONFIG, "does not exist", "Give the bundle file", bundle="missing"),
    Case("bundle-no-manifest", CONFIG, "has no manifest.json", "bundle create",
         bundle="no-manifest"),
    Case("bundle-manifest-garbled", CONFIG, "damaged manifest.json", "Copy the bundle again",
         bundle="manifest-garbled"),
    Case("bundle-manifest-sum-tampered", CHECKSUM, "sha256 mismatch for frakti in the bundle",
         "copy the bundle again",
         bundle="manifest-sum-tampered"),
    Case("bundle-manifest-file-swapped", CHECKSUM, "kubeadm in the bundle", "copy the bundle again",
         bundle="manifest-file-swapped"),
    Case("bundle-manifest-identity-tampered", CONFIG, "does not fit this host", "bundle create",
         bundle="manifest-identity-tampered"),
    Case("bundle-artifact-tampered", CHECKSUM, "sha256 mismatch", "copy the bundle again",
         bundle="artifact-tampered"),
    Case("bundle-last-artifact-tampered", CHECKSUM, "sha256 mismatch", "copy the bundle again",
         bundle="last-artifact-tampered"),
    Case("bundle-path-escape", CONFIG, "'../evil'", "bundle create", bundle="path-escape"),
    Case("bundle-absolute-member", CONFIG, "'/etc/evil'", "bundle create", bundle="absolute"),
    Case("bundle-device-member", CONFIG, "it is a device", "bundle create", bundle="device"),
    Case("bundle-symlink-member", CONFIG, "a symbolic link", "bundle create", bundle="symlink"),
    Case("bundle-wrong-family", CONFIG, "made for rpm packages", "--family deb",
         bundle="wrong-family"),
    Case("bundle-wrong-arch", CONFIG, "made for arm64, this host is amd64", "--arch amd64",
         bundle="wrong-arch"),
    Case("bundle-future-format", CONFIG, "has format 2", "same frakti-install version",
         bundle="future-format"),
]


# --------------------------------------------------------------------------- the host


def listing(m: SimMachine) -> Dict[str, str]:
    """Every file and directory under the simulated root, with a hash of its content,
    and the simulated services, packages, routes and cluster."""
    files = {}
    for path in sorted(m.root.rglob("*")):
        if path.is_relative_to(m.p("/var/cache/sim")):
            continue  # the stand-in downloader's own store
        relative = str(path.relative_to(m.root))
        if path.is_symlink():
            files[relative] = "-> " + str(path.readlink())
        elif path.is_file():
            files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        else:
            files[relative] = "dir"
    return {**files, **{k: v for k, v in m.snapshot().items() if k.startswith("#")}}


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Tuple[SimMachine, Path]]:
    def use(**host: object) -> Tuple[SimMachine, Path]:
        m = SimMachine(tmp_path / "root", "debian", "12", **host)  # type: ignore[arg-type]
        m.state.routes["192.168.5.0/24"] = "10.0.0.254"  # a site network behind the gateway

        def new_context(settings: Settings, downloader_factory: Optional[Callable] = None):  # type: ignore[type-arg]
            ctx = m.context(settings)
            if isinstance(getattr(downloader_factory, "__self__", None), Bundle):
                ctx.downloader_factory = downloader_factory  # a bundle's, else the stand-in
            return ctx

        monkeypatch.setattr(session, "new_context", new_context)
        config = tmp_path / "frakti.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "checksums": given_checksums("debian"),
                    "log_file": str(tmp_path / "install.log"),
                    "lock_wait": 0,
                }
            )
        )
        return m, config

    return use


# --------------------------------------------------------------------------- bundles


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle for the simulated Debian 12 host, made from the stand-in downloads."""
    where = tmp_path_factory.mktemp("bundle")
    m = SimMachine(where / "maker", "debian", "12")
    settings = m.settings()
    artifacts = Artifacts(settings, versions.resolve(), "amd64", "deb", lambda: m.downloader)  # type: ignore[arg-type,return-value]
    return create_bundle(
        where / "good.tar.gz", artifacts, family="deb", arch="amd64",
        versions=settings.versions, os_packages=os_packages_for("deb"),
    )  # fmt: skip


def _members(path: Path) -> Iterator[Tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            yield info, handle.read() if handle else b""


def _write(path: Path, members: List[Tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if info.isfile():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _with_manifest(good: Path, out: Path, change: Callable[[dict], None]) -> Path:
    members = list(_members(good))
    for index, (info, data) in enumerate(members):
        if info.name == "manifest.json":
            manifest = json.loads(data)
            change(manifest)
            members[index] = (info, json.dumps(manifest).encode())
    return _write(out, members)


def _artifact_tampered(good: Path, out: Path, which: int) -> Path:
    members = list(_members(good))
    artifacts = [i for i, (info, _) in enumerate(members) if info.name.startswith("artifacts/")]
    index = artifacts[which]
    info, data = members[index]
    members[index] = (info, data + b"\n# tampered\n")
    return _write(out, members)


def _extra_member(good: Path, out: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    return _write(out, [*_members(good), (info, data)])


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def _swap_files(manifest: dict) -> None:
    entries = manifest["artifacts"]
    entries["kubelet"]["file"], entries["kubeadm"]["file"] = (
        entries["kubeadm"]["file"], entries["kubelet"]["file"],
    )  # fmt: skip


def _set(path: Tuple[str, ...], value: object) -> Callable[[dict], None]:
    def change(manifest: dict) -> None:
        target = manifest
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


BUNDLES: Dict[str, Callable[[Path, Path], Path]] = {
    "not-a-tarball": lambda good, out: (out.write_bytes(b"not a tarball at all\n"), out)[1],
    "truncated": lambda good, out: (out.write_bytes(good.read_bytes()[: good.stat().st_size // 2]), out)[1],  # noqa: E501
    "missing": lambda good, out: out,
    "no-manifest": lambda good, out: _write(
        out, [(i, d) for i, d in _members(good) if i.name != "manifest.json"]
    ),
    "manifest-garbled": lambda good, out: _write(
        out, [(i, b"{nope" if i.name == "manifest.json" else d) for i, d in _members(good)]
    ),
    "manifest-sum-tampered": lambda good, out: _with_manifest(
        good, out, _set(("artifacts", "frakti", "sha256"), "0" * 64)
    ),
    "manifest-file-swapped": lambda good, out: _with_manifest(good, out, _swap_files),
    "manifest-identity-tampered": lambda good, out: _with_manifest(
        good, out, _set(("artifacts", "frakti", "identity"), "/evil/frakti")
    ),
    "artifact-tampered": lambda good, out: _artifact_tampered(good, out, 0),
    "last-artifact-tampered": lambda good, out: _artifact_tampered(good, out, -1),
    "path-escape": lambda good, out: _extra_member(good, out, _member("../evil"), b"x"),
    "absolute": lambda good, out: _extra_member(good, out, _member("/etc/evil"), b"x"),
    "device": lambda good, out: _extra_member(good, out, _member("dev/sda", tarfile.BLKTYPE)),
    "symlink": lambda good, out: _extra_member(
        good, out, _member("artifacts/link", tarfile.SYMTYPE, "/etc/shadow")
    ),
    "wrong-family": lambda good, out: _with_manifest(good, out, _set(("family",), "rpm")),
    "wrong-arch": lambda good, out: _with_manifest(good, out, _set(("arch",), "arm64")),
    "future-format": lambda good, out: _with_manifest(good, out, _set(("format",), 2)),
}


# --------------------------------------------------------------------------- the table


def test_the_table_is_large_and_its_ids_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) >= 90 and len(set(ids)) == len(ids), len(ids)
    assert set(BUNDLES) == {case.bundle for case in CASES if case.bundle}


def _config_file(case: Case, tmp_path: Path, good: Path) -> Path:
    if case.config_path == "dangling.yaml":
        (tmp_path / "dangling.yaml").symlink_to(tmp_path / "gone.yaml")
    elif case.config_path == "sock.yaml":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(tmp_path / "sock.yaml"))
        server.close()
    if case.config_path:
        return tmp_path / case.config_path
    if case.raw is not None:
        path = tmp_path / "hostile.yaml"
        path.write_bytes(case.raw)
        return path
    if case.config:  # the good file, less the keys the case gives
        given = yaml.safe_load(case.config)
        kept = {k: v for k, v in yaml.safe_load(good.read_text()).items() if k not in given}
        path = tmp_path / "hostile.yaml"
        path.write_text(yaml.safe_dump(kept) + case.config)
        return path
    return good


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input_is_refused_before_anything_changes(
    sim: Callable[..., Tuple[SimMachine, Path]], tmp_path: Path, good_bundle: Path, case: Case
) -> None:
    m, good = sim(**case.host)
    config = _config_file(case, tmp_path, good)
    args = [case.command, "--yes", "-c", str(config), *case.args]
    if case.command == "node" and "--join" not in case.args:
        args += JOIN
    if case.bundle:
        args += ["--bundle", str(BUNDLES[case.bundle](good_bundle, tmp_path / "hostile.tar.gz"))]
    before = listing(m)

    result = runner.invoke(cli.app, args, env=case.env)

    said = " ".join(result.output.split())  # rich folds long lines
    assert result.exit_code == case.code, result.output
    assert case.names in said, result.output
    assert case.fix in said, result.output
    assert "Traceback" not in said and result.exception is None or isinstance(
        result.exception, SystemExit
    ), result.output
    assert m.runner.mutations == 0, [c for c in m.runner.calls if m.runner.mutating(c)]
    assert listing(m) == before


def test_a_good_bundle_installs_on_the_same_host(
    sim: Callable[..., Tuple[SimMachine, Path]], good_bundle: Path
) -> None:
    """The control for the bundle cases: the untampered bundle is accepted."""
    m, config = sim()
    result = runner.invoke(
        cli.app, ["allinone", "--yes", "-c", str(config), "--bundle", str(good_bundle)]
    )
    assert result.exit_code == 0, result.output
    assert m.p("/usr/bin/frakti").exists()


def test_a_good_config_file_installs(sim: Callable[..., Tuple[SimMachine, Path]]) -> None:
    """The control for the table: the good config and join pass every check above."""
    m, config = sim()
    result = runner.invoke(cli.app, ["allinone", "--dry-run", "-c", str(config)])
    assert result.exit_code == 0, result.output
    worker = runner.invoke(cli.app, ["node", "--dry-run", "-c", str(config), *JOIN])
    assert worker.exit_code == 0, worker.output


def test_an_unknown_frakti_install_variable_is_named_with_the_near_setting(
    sim: Callable[..., Tuple[SimMachine, Path]], caplog: pytest.LogCaptureFixture
) -> None:
    _, config = sim()
    result = runner.invoke(
        cli.app, ["allinone", "--dry-run", "-c", str(config)],
        env={"FRAKTI_INSTALL_PODCIDR": "10.32.0.0/16"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ignoring FRAKTI_INSTALL_PODCIDR" in caplog.text
    assert "FRAKTI_INSTALL_POD_CIDR" in caplog.text


def test_the_route_parsers_read_what_iproute2_prints() -> None:
    from frakti_install import probes

    captured = Path(__file__).parent / "fixtures/probes/ip-route/gateways.json"
    stdout = json.loads(captured.read_text())["stdout"]
    assert probes.parse_route_destinations(stdout) == [
        "10.0.0.0/24", "10.244.1.0/24", "10.244.2.0/24",
    ]  # fmt: skip
    assert probes.parse_route_destinations("unreachable 10.9.0.0/16 proto static\n") == [
        "10.9.0.0/16"
    ]
    local_table = (  # ip route show table local, as ip-route's documentation shows it
        "broadcast 127.0.0.0 dev lo proto kernel scope link src 127.0.0.1\n"
        "local 127.0.0.0/8 dev lo proto kernel scope host src 127.0.0.1\n"
        "local 127.0.0.1 dev lo proto kernel scope host src 127.0.0.1\n"
        "broadcast 192.168.44.0 dev wlp58s0 proto kernel scope link src 192.168.44.211\n"
        "local 192.168.44.211 dev wlp58s0 proto kernel scope host src 192.168.44.211\n"
    )
    assert probes.parse_local_addresses(local_table) == ["192.168.44.211"]


def test_a_host_with_a_cluster_is_not_judged_by_its_own_pod_routes(
    sim: Callable[..., Tuple[SimMachine, Path]],
) -> None:
    """Once installed, routes to the other nodes' pod subnets lie inside the pod CIDR
    by design: the check of the ranges against the host's routes is for a new install."""
    m, config = sim()
    assert runner.invoke(cli.app, ["allinone", "--yes", "-c", str(config)]).exit_code == 0
    m.state.routes["10.244.7.0/24"] = "10.0.0.7"
    status = runner.invoke(cli.app, ["status", "-c", str(config)])
    assert status.exit_code in (0, ExitCode.DRIFT), status.output
    assert "overlaps the route" not in status.output, status.output
