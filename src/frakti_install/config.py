"""Settings: defaults <- YAML file <- FRAKTI_INSTALL_* environment <- flags, then validated."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import logging
import os
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import yaml

from frakti_install import datafiles, versions
from frakti_install.errors import ConfigError

log = logging.getLogger(__name__)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
FINGERPRINT_RE = re.compile(r"^[0-9A-F]{40}$")
TIME_SPAN_RE = re.compile(r"^(off|[1-9][0-9]*(s|min|h))$")
CGROUP_DRIVERS = ("auto", "cgroupfs", "systemd")
ENV_PREFIX = "FRAKTI_INSTALL_"
NODE_PREFIX = 24  # kubeadm's controller manager gives each node a /24 of the pod CIDR


@dataclass(frozen=True)
class Settings:
    runtime: str = "frakti"  # frakti (default) | kata: containerd + Kata Containers
    version_set: Optional[str] = None
    frakti_version: Optional[str] = None
    kubernetes_version: Optional[str] = None
    hyperd_version: Optional[str] = None
    kata_version: Optional[str] = None  # the kata profile's Kata Containers release
    pod_cidr: str = "10.244.0.0/16"
    node_subnet: str = "auto"  # the /24 the cluster allocates to this node
    service_cidr: str = "10.96.0.0/12"
    cgroup_driver: str = "auto"
    hyper_grpc: str = "127.0.0.1:22318"
    frakti_socket: str = "/var/run/frakti.sock"
    streaming_port: int = 22521
    # kubelet flags upstream's all-in-one script set (AllAlpha for the CRI alpha features).
    kubelet_feature_gates: str = "AllAlpha=true"
    node_ready_timeout: int = 300
    # How often a timer re-runs `frakti-install routes` as nodes join and
    # leave (a systemd time span: 30s, 5min, 1h), or "off".
    routes_sync_interval: str = "5min"
    lock_wait: int = 60  # seconds a run waits for another one to finish
    verify_timeout: int = 180  # seconds `verify` waits for its pods to run and finish
    verify_image: str = ""  # the image of verify's pods ("" = the profile's, pinned by digest)
    drain_timeout: int = 300  # seconds `upgrade` lets `kubectl drain` evict this node's pods
    drain_delete_emptydir_data: bool = False  # drain evicts pods with emptyDir volumes too
    drain_grace_period: int = -1  # kubectl drain --grace-period (-1: each pod's own)
    drain_force: bool = False  # kubectl drain --force: pods no controller manages are deleted
    # The kubeconfig a worker's `upgrade` drains and uncordons itself with (its
    # kubelet's credentials cannot evict pods); a run's own, never recorded.
    drain_kubeconfig: str = ""
    mirrors: Dict[str, str] = field(default_factory=dict)
    checksums: Dict[str, str] = field(default_factory=dict)
    # OpenPGP fingerprints to trust for a signing key (a mirror that signs with its own key)
    key_fingerprints: Dict[str, str] = field(default_factory=dict)
    allow_unverified: Tuple[str, ...] = ()
    allow_eol: bool = False  # install a Kubernetes release past its end of life (kata profile)
    ignore_preflight_errors: Tuple[str, ...] = ()
    http_proxy: str = ""
    https_proxy: str = ""
    no_proxy: str = ""
    disable_swap: bool = False
    advertise_address: str = ""  # the API server's address (kubeadm picks the default route's)
    node_ip: str = ""  # kubelet's --node-ip, for hosts with several interfaces
    join_endpoint: str = ""
    join_token: str = field(default="", repr=False)  # a secret: never printed
    join_ca_hash: str = ""
    state_dir: str = "/var/lib/frakti-install"
    cache_dir: str = "/var/cache/frakti-install"
    log_file: str = "/var/log/frakti-install.log"

    @property
    def versions(self) -> versions.VersionSet:
        """The frakti profile's row of the compatibility table (what bundles carry)."""
        return versions.resolve(
            self.version_set,
            frakti=self.frakti_version,
            kubernetes=self.kubernetes_version,
            hyperd=self.hyperd_version,
        )


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}

# --- the settings schema: one rule per setting ---------------------------------
Problem = Optional[str]  # what is wrong with a value, or None


@dataclass(frozen=True)
class Rule:
    """How one setting is written and checked (its type comes from its default)."""

    example: str  # a good value, as a user writes it: every message about the key shows it
    check: Callable[[Any], Problem] = lambda value: None
    flag: str = ""  # the option that sets it, where one does
    hint: str = ""  # more on how to fix it, beside the example


VERSION_RE = re.compile(r"^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$")
FEATURE_GATES_RE = re.compile(r"^[A-Za-z0-9]+=(true|false)(,[A-Za-z0-9]+=(true|false))*$")
CA_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# a DNS name (RFC 1123 labels), an IPv4 address, or an IPv6 address in brackets
HOST_RE = re.compile(
    r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
MAX_SECONDS = 86400  # a wait of more than a day is a typo, not a plan
TIME_UNITS = {"s": 1, "min": 60, "h": 3600}
MAX_CONFIG_BYTES = 1 << 20  # a settings file is a few hundred bytes
SERVICE_DNS_INDEX = 10  # kubeadm's GetDNSIP: the cluster DNS service's address in service_cidr


def _choice(choices: Callable[[], Collection[str]]) -> Callable[[Any], Problem]:
    def check(value: Any) -> Problem:
        known = sorted(choices())
        return None if value in known else f"{value!r} is not one of {', '.join(known)}"

    return check


def _network_problem(value: str) -> Problem:
    if ":" in value:
        return f"{value!r} is an IPv6 network; frakti-install sets up IPv4 pod networks only"
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        return f"{value!r} is not an IPv4 network ({exc})"
    return None


def _address_problem(value: str) -> Problem:
    if not value:
        return None
    if ":" in value:
        return f"{value!r} is an IPv6 address; give the host's IPv4 address"
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        return f"{value!r} is not an IPv4 address"
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        return f"{value} cannot be a node's address (loopback, unspecified or multicast)"
    return None


def _port_problem(port: str) -> Problem:
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"the port {port!r} is not a TCP port (1-65535)"
    return None


def _host_port_problem(value: str) -> Problem:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        return f"{value!r} is not HOST:PORT"
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare is not host:
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            return f"{value!r}: {host} is not an IPv6 address"
    elif not HOST_RE.fullmatch(host):
        return f"{value!r}: {host!r} is not a host name or IPv4 address"
    return _port_problem(port)


def _endpoint_problem(value: str) -> Problem:
    return _host_port_problem(value) if value else None


def _seconds_problem(low: int) -> Callable[[Any], Problem]:
    def check(value: Any) -> Problem:
        if not low <= value <= MAX_SECONDS:
            return f"{value} is not between {low} and {MAX_SECONDS} seconds"
        return None

    return check


def _time_span_problem(value: str) -> Problem:
    match = TIME_SPAN_RE.fullmatch(value)
    if not match:
        return f"{value!r} is not a time span"
    if value != "off" and int(value[: -len(match.group(2))]) * TIME_UNITS[match.group(2)] > (
        MAX_SECONDS
    ):
        return f"{value!r} is longer than a day"
    return None


def _version_problem(value: Optional[str]) -> Problem:
    if value is None or VERSION_RE.fullmatch(value):
        return None
    return f"{value!r} is not a version number"


MINOR_RE = re.compile(r"^v[0-9]+\.[0-9]+$")


def _kubernetes_version_problem(value: Optional[str]) -> Problem:
    """A release (v1.35.9), or a minor (v1.35: its latest patch, where the profile
    keeps a table of minors; the profile refuses a minor it has no table for)."""
    if value is not None and MINOR_RE.fullmatch(value):
        return None
    return _version_problem(value)


def _version_set_problem(value: Optional[str]) -> Problem:
    if value is None or value in versions.known_sets():
        return None
    removed = datafiles.load("versions").get("removed", {})
    if value in removed:
        return f"the version set {value!r} was removed: {removed[value]}"
    return (
        f"{value!r} is not a known version set (known: {', '.join(sorted(versions.known_sets()))})"
    )


def _absolute_path_problem(value: str) -> Problem:
    if not value.startswith("/"):
        return f"{value!r} is not an absolute path"
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        return f"{value!r} holds a space or a control character"
    return None


def _plain_problem(value: str) -> Problem:
    """Text that goes into unit files and env files: one line, no control characters."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return f"{value!r} holds a control character (a line break?)"
    return None


def _proxy_problem(value: str) -> Problem:
    if not value:
        return None
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        return f"{value!r} holds a space or a control character"
    parts = urlsplit(value if "://" in value else "http://" + value)
    if parts.scheme not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
        return f"{value!r} is not a proxy URL"
    try:
        parts.port  # noqa: B018  ValueError when out of range
    except ValueError:
        return f"{value!r} has a port out of range"
    return None


def _url_problem(url: str) -> Problem:
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return f"{url!r} holds a space or a control character"
    parts = urlsplit(url)
    if parts.scheme == "file":
        return f"{url!r} is a file:// URL; downloads go over HTTP(S) only"
    if parts.scheme not in ("http", "https"):
        return f"{url!r} must be an http(s):// URL"
    if not parts.hostname:
        return f"{url!r} names no host"
    try:
        parts.port  # noqa: B018  ValueError when out of range
    except ValueError:
        return f"{url!r} has a port out of range"
    return None


def _pairs_problem(
    names: Callable[[], Collection[str]], what: str, value_problem: Callable[[str, str], Problem]
) -> Callable[[Dict[str, str]], Problem]:
    def check(pairs: Dict[str, str]) -> Problem:
        known = sorted(names())
        for name, value in pairs.items():
            if name not in known:
                return f"{name!r} is not {what} (known: {', '.join(known)})"
            problem = value_problem(name, value)
            if problem:
                return problem
        return None

    return check


def _names_problem(
    names: Callable[[], Collection[str]], what: str
) -> Callable[[Tuple[str, ...]], Problem]:
    def check(items: Tuple[str, ...]) -> Problem:
        known = sorted(names())
        unknown = [item for item in items if item not in known]
        if unknown:
            return f"{unknown[0]!r} is not {what} (known: {', '.join(known)})"
        return None

    return check


def _mirror_kinds() -> Collection[str]:
    return {kind for table in artifact_tables() for kind in table["bases"]}


def _artifact_names() -> Collection[str]:
    return {name for table in artifact_tables() for name in table["artifacts"]}


def _signing_keys() -> Collection[str]:
    return {
        name
        for table in artifact_tables()
        for name, entry in table["artifacts"].items()
        if entry.get("sha256") == "fingerprint"
    }


def _sha256_problem(name: str, value: str) -> Problem:
    if SHA256_RE.fullmatch(value):
        return None
    return f"the sha256 for {name} is not 64 hex digits: {_shown(value)}"


def _fingerprints_problem(name: str, value: str) -> Problem:
    for fingerprint in split_fingerprints(value):
        if not FINGERPRINT_RE.fullmatch(fingerprint):
            return f"{_shown(fingerprint)} for {name} is not 40 hex digits"
    return None


SCHEMA: Dict[str, Rule] = {
    "runtime": Rule(
        "frakti",
        lambda v: _choice(runtime_names)(v),
        "--runtime",
        "'frakti-install info' shows which profile fits this host.",
    ),
    "version_set": Rule('"1.12"', _version_set_problem, "--version-set"),
    "frakti_version": Rule("v1.12.0", _version_problem, "--frakti-version"),
    "kubernetes_version": Rule(
        "v1.12.10",
        _kubernetes_version_problem,
        "--kubernetes-version",
        "The kata profile also takes a minor (v1.35).",
    ),
    "hyperd_version": Rule("1.1.0", _version_problem, "--hyperd-version"),
    "kata_version": Rule("3.32.0", _version_problem, "--kata-version"),
    "pod_cidr": Rule(
        "10.244.0.0/16", _network_problem, "--pod-cidr", "ADDRESS/PREFIX with no host bits set."
    ),
    "node_subnet": Rule(
        "auto",
        lambda v: None if v == "auto" else _network_problem(v),
        "--node-subnet",
        "auto (the /24 the cluster allocates) or a /24 of the pod CIDR such as 10.244.1.0/24.",
    ),
    "service_cidr": Rule(
        "10.96.0.0/12", _network_problem, "--service-cidr", "ADDRESS/PREFIX with no host bits set."
    ),
    "cgroup_driver": Rule("auto", _choice(lambda: CGROUP_DRIVERS), "--cgroup-driver"),
    "hyper_grpc": Rule("127.0.0.1:22318", _host_port_problem, hint="hyperd's gRPC address."),
    "frakti_socket": Rule("/var/run/frakti.sock", _absolute_path_problem),
    "streaming_port": Rule("22521", lambda v: _port_problem(str(v))),
    "kubelet_feature_gates": Rule(
        "AllAlpha=true",
        lambda v: (
            None if not v or FEATURE_GATES_RE.fullmatch(v) else f"{v!r} is not NAME=true|false,..."
        ),
    ),
    "node_ready_timeout": Rule("300", _seconds_problem(1)),
    "routes_sync_interval": Rule(
        "5min",
        _time_span_problem,
        hint="A number and a unit (30s, 5min, 1h; at most a day), or off to keep no timer.",
    ),
    "lock_wait": Rule("60", _seconds_problem(0)),
    "verify_timeout": Rule("180", _seconds_problem(1)),
    "drain_timeout": Rule("300", _seconds_problem(1), hint="kubectl drain --timeout, in seconds."),
    "drain_delete_emptydir_data": Rule(
        "true", hint="kubectl drain --delete-emptydir-data: their emptyDir data is lost."
    ),
    "drain_grace_period": Rule(
        "-1",
        lambda v: None if -1 <= v <= MAX_SECONDS else f"{v} is not -1 or between 0 and "
        f"{MAX_SECONDS} seconds",
        hint="kubectl drain --grace-period, in seconds; -1 leaves each pod its own.",
    ),
    "drain_force": Rule(
        "true", hint="kubectl drain --force: pods that no controller manages are lost."
    ),
    "drain_kubeconfig": Rule(
        "/root/admin.conf",
        lambda v: _absolute_path_problem(v) if v else None,
        "--kubeconfig",
        "An admin kubeconfig (a copy of the master's /etc/kubernetes/admin.conf).",
    ),
    "verify_image": Rule(
        "registry.example/busybox@sha256:<64 hex digits>",
        _plain_problem,
        hint="An image every node can pull, best pinned by digest.",
    ),
    "mirrors": Rule(
        "github=https://mirror.example/github",
        _pairs_problem(_mirror_kinds, "a mirror kind", lambda kind, url: _url_problem(url)),
        "--mirror",
        "Serve the mirror over HTTP(S); for a host with no network use --bundle FILE.",
    ),
    "checksums": Rule(
        "frakti=<sha256>",
        _pairs_problem(_artifact_names, "an artifact", _sha256_problem),
        "--checksum",
        "sha256sum FILE prints the sum.",
    ),
    "key_fingerprints": Rule(
        "kubernetes-key=<40 hex digits>",
        _pairs_problem(_signing_keys, "a signing key", _fingerprints_problem),
        "--key-fingerprint",
        "gpg --show-keys --with-fingerprint KEYFILE prints it.",
    ),
    "allow_unverified": Rule(
        "[frakti]", _names_problem(_artifact_names, "an artifact"), "--allow-unverified"
    ),
    "allow_eol": Rule("true", flag="--allow-eol"),
    "ignore_preflight_errors": Rule("[Swap, KVM]", flag="--ignore-preflight-errors"),
    "http_proxy": Rule("http://proxy.example:3128", _proxy_problem),
    "https_proxy": Rule("http://proxy.example:3128", _proxy_problem),
    "no_proxy": Rule("localhost,.example.com", _plain_problem),
    "disable_swap": Rule("true", flag="--disable-swap"),
    "advertise_address": Rule(
        "192.168.56.10",
        _address_problem,
        "--advertise-address",
        "One of this host's IPv4 addresses (ip -4 addr).",
    ),
    "node_ip": Rule(
        "192.168.56.11",
        _address_problem,
        "--node-ip",
        "One of this host's IPv4 addresses (ip -4 addr).",
    ),
    "join_endpoint": Rule(
        "192.168.56.10:6443",
        _endpoint_problem,
        "--join",
        "Copy the line 'frakti-install join-command' prints on the master.",
    ),
    "join_token": Rule("<the token join-command prints>", flag="--token"),
    "join_ca_hash": Rule(
        "sha256:<64 hex digits>",
        lambda v: None if not v or CA_HASH_RE.match(v) else f"{_shown(v)} is not sha256:<64 hex>",
        "--discovery-token-ca-cert-hash",
        "Copy the line 'frakti-install join-command' prints on the master.",
    ),
    "state_dir": Rule("/var/lib/frakti-install", _absolute_path_problem),
    "cache_dir": Rule("/var/cache/frakti-install", _absolute_path_problem),
    "log_file": Rule("/var/log/frakti-install.log", _absolute_path_problem),
}


def _shown(value: Any, limit: int = 60) -> str:
    """A value as a message quotes it: never a whole table or list, never too long."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple, set)):
        return "a list"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'"


@dataclass(frozen=True)
class Origin:
    """Where a setting's value came from, to name it as the user wrote it."""

    kind: str  # "default" | "file" | "env" | "env-proxy" (HTTP_PROXY...) | "flag"
    path: str = ""  # the config file

    def name(self, key: str) -> str:
        if self.kind == "file":
            return f"config file {self.path}: {key}"
        if self.kind == "env":
            return f"{ENV_PREFIX}{key.upper()}"
        if self.kind == "env-proxy":
            return key.upper()
        if self.kind == "flag":
            return SCHEMA[key].flag or key
        return key

    def example(self, key: str) -> str:
        value = SCHEMA[key].example
        if self.kind != "file" and self.kind != "default":
            value = value.strip('"')
        if self.kind == "env":
            return f"{ENV_PREFIX}{key.upper()}={value.strip('[]').replace(', ', ',')}"
        if self.kind == "flag" and SCHEMA[key].flag:
            flag = SCHEMA[key].flag
            return flag if isinstance(FIELDS[key].default, bool) else f"{flag} {value.strip('[]')}"
        return f"{key}: {value}"


DEFAULT = Origin("default")


def setting_error(key: str, problem: str, origin: Origin = DEFAULT, hint: str = "") -> ConfigError:
    """A ConfigError that names the setting as the user gave it and shows how to write it."""
    rule = SCHEMA[key]
    fix = " ".join(
        part for part in (hint or rule.hint, f"Write it like {origin.example(key)}.") if part
    )
    return ConfigError(f"{origin.name(key)}: {problem}", hint=fix)


def validate(settings: Settings, origins: Optional[Mapping[str, Origin]] = None) -> Settings:
    """Every rule of SCHEMA, then the checks between settings; ConfigError on the first
    problem, naming the setting where the user gave it (origins: key -> Origin)."""
    origins = origins or {}

    def origin(key: str) -> Origin:
        return origins.get(key, DEFAULT)

    def given(*keys: str) -> str:
        """Of settings checked together, the one the user gave (the first if none or both)."""
        return next((key for key in keys if key in origins), keys[0])

    for key, rule in SCHEMA.items():
        problem = rule.check(getattr(settings, key))
        if problem:
            raise setting_error(key, problem, origin(key))
    pod = ipaddress.IPv4Network(settings.pod_cidr)
    service = ipaddress.IPv4Network(settings.service_cidr)
    node = pod if settings.node_subnet == "auto" else ipaddress.IPv4Network(settings.node_subnet)
    if not node.subnet_of(pod):
        key = given("node_subnet", "pod_cidr")
        raise setting_error(
            key,
            ("" if key == "node_subnet" else "node_subnet ")
            + f"{node} is not inside pod_cidr {pod}",
            origin(key),
            "Pick a node subnet out of the cluster's pod CIDR, e.g. 10.244.1.0/24.",
        )
    if settings.node_subnet == "auto" and pod.prefixlen > NODE_PREFIX:
        raise setting_error(
            "pod_cidr",
            f"{pod} cannot hold a /{NODE_PREFIX} per node (node_subnet auto)",
            origin("pod_cidr"),
            f"Use a pod CIDR of /{NODE_PREFIX - 8} to /{NODE_PREFIX - 1}.",
        )
    if settings.node_subnet == "auto" and pod.prefixlen < NODE_PREFIX - 16:
        raise setting_error(
            "pod_cidr",
            f"{pod} is larger than kube-controller-manager allows for /{NODE_PREFIX} "
            "node subnets (at most 16 bits between the two masks)",
            origin("pod_cidr"),
            f"Use a pod CIDR of /{NODE_PREFIX - 16} to /{NODE_PREFIX - 1}.",
        )
    if pod.overlaps(service):
        key = given("service_cidr", "pod_cidr")
        other = "pod_cidr" if key == "service_cidr" else "service_cidr"
        raise setting_error(
            key,
            f"{getattr(settings, key)} overlaps {other} {getattr(settings, other)}",
            origin(key),
            "Give the pods and the services ranges that do not overlap.",
        )
    if service.num_addresses <= SERVICE_DNS_INDEX:
        raise setting_error(
            "service_cidr",
            f"{service} has {service.num_addresses} addresses; kubeadm gives the "
            f"cluster DNS the address at index {SERVICE_DNS_INDEX} of it",
            origin("service_cidr"),
            "Use a /28 or larger.",
        )
    return settings  # the profile checks its versions (runtimes.load_settings)


def runtime_names() -> List[str]:
    """The runtime profiles: the modules of the runtimes package (found without
    importing them, so the settings layer need not know any profile)."""
    folder = Path(__file__).parent / "runtimes"
    return sorted(info.name for info in pkgutil.iter_modules([str(folder)]) if info.name != "base")


def unknown_runtime(name: str) -> ConfigError:
    return ConfigError(
        f"runtime {name!r} is not one of {', '.join(runtime_names())}",
        hint="'frakti-install info' shows which profile fits this host.",
    )


def artifact_tables() -> List[Dict[str, Any]]:
    """Every profile's artifact table (the data files with bases and artifacts):
    a mirror kind, checksum or key named in the settings must be in one."""
    tables = [datafiles.load(path.stem) for path in sorted(datafiles.DATA_DIR.glob("*.yaml"))]
    return [table for table in tables if "artifacts" in table and "bases" in table]


def _coerce(name: str, value: Any, origin: Origin = DEFAULT) -> Any:
    """A raw value (YAML, environment or flag) as the setting's type; ConfigError naming it."""
    default = FIELDS[name].default

    def wrong(problem: str) -> ConfigError:
        return setting_error(name, problem, origin)

    if name in ("mirrors", "checksums", "key_fingerprints"):
        if isinstance(value, str):
            value = parse_pairs([value], name, origin)
        if not isinstance(value, Mapping):
            raise wrong(f"must be a mapping of NAME: VALUE, not {_shown(value)}")
        pairs = {}
        for key, item in value.items():
            if (
                not isinstance(key, str)
                or not isinstance(item, (str, int))
                or isinstance(item, bool)
            ):
                raise wrong(f"{_shown(key)}: {_shown(item)} is not NAME: VALUE (two strings)")
            pairs[key] = str(item).strip()
        if name == "checksums":  # sha256sum prints lowercase, some tools uppercase
            pairs = {key: item.lower() for key, item in pairs.items()}
        return pairs
    if name in ("allow_unverified", "ignore_preflight_errors"):
        if isinstance(value, str):
            items = value.split(",")
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise wrong(f"must be a list of names (or NAME,NAME), not {_shown(value)}")
        if not all(isinstance(item, str) for item in items):
            bad = next(item for item in items if not isinstance(item, str))
            raise wrong(f"{_shown(bad)} is not a name")
        return tuple(item.strip() for item in items if item.strip())
    if isinstance(value, (Mapping, list, tuple, set)):
        raise wrong(f"must be a single value, not {_shown(value)}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off", ""):
            return False
        raise wrong(f"must be true or false, not {_shown(value)}")
    if isinstance(default, int):
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise wrong(f"must be a whole number, not {_shown(value)}")
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            raise wrong(f"must be a whole number, not {_shown(value)}") from None
    if value is None:
        if default is None:
            return None
        raise wrong("is empty")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise wrong(f"must be text, not {_shown(value)} ({type(value).__name__})")
    return str(value).strip() if isinstance(value, str) else str(value)


def split_fingerprints(value: str) -> List[str]:
    """'DE15 B144 ..., AB12...' -> ['DE15B144...', 'AB12...']"""
    return [f.replace(" ", "").upper() for f in value.split(",") if f.strip()]


def parse_pairs(items: List[str], what: str, origin: Optional[Origin] = None) -> Dict[str, str]:
    """['kubernetes=http://m/k8s', ...] -> {'kubernetes': 'http://m/k8s'}.

    what: the setting (mirrors) or its option's noun (mirror: given as a flag).
    Comma lists are allowed (a=1,b=2); a name given twice collects its values
    comma-separated (for several fingerprints of one key)."""
    name = what if what in SCHEMA else what + "s"
    origin = origin or Origin("flag")
    pairs: Dict[str, str] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise setting_error(name, f"expected NAME=VALUE, got {_shown(part)}", origin)
            key = key.strip()
            pairs[key] = f"{pairs[key]},{value.strip()}" if key in pairs else value.strip()
    return pairs


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice (it keeps the last one silently)."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=False)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key; the constructor says what is wrong
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {_shown(key)} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def parse_yaml(text: str, what: str, path: Path) -> Any:
    """YAML text; malformed (or too deeply nested) is a ConfigError naming `what`."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{what} {path} is not valid YAML: {exc}",
            hint="Fix the place the message shows (YAML: one 'name: value' a line).",
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{what} {path} nests too deeply to be settings",
            hint="Settings are one 'name: value' a line.",
        ) from None


def names_runtime(config_file: Path, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether the config file or the environment chooses a runtime profile."""
    environ = os.environ if environ is None else environ
    values = read_yaml(config_file, "config file")
    return ENV_PREFIX + "RUNTIME" in environ or (isinstance(values, dict) and "runtime" in values)


def read_yaml(path: Path, what: str) -> Any:
    """A user's YAML file; an unreadable or malformed one is a ConfigError naming `what`."""
    try:
        if path.is_dir():
            raise ConfigError(f"{what} {path} is a directory", hint="Give the YAML file inside it.")
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read {what} {path}: {exc.strerror}",
            hint="Give the path of a readable YAML file.",
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{what} {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB",
            hint="Is it the right file? Settings are a few lines of YAML.",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} is {raw[exc.start]:#x})",
            hint="Save it as UTF-8.",
        ) from None
    return parse_yaml(text, what, path)


def from_file(path: Path, text: Optional[str] = None) -> Dict[str, Any]:
    """The settings in a config file (or in `text`, read from it by the Host)."""
    data = read_yaml(path, "config file") if text is None else parse_yaml(text, "config file", path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of settings, not {_shown(data)}",
            hint="Write one 'name: value' a line, e.g. pod_cidr: 10.244.0.0/16.",
        )
    not_names = [key for key in data if not isinstance(key, str)]
    if not_names:
        raise ConfigError(
            f"config file {path}: {_shown(not_names[0])} is not a setting name",
            hint="Keys are setting names, e.g. pod_cidr: 10.244.0.0/16.",
        )
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        near = difflib.get_close_matches(unknown[0].lower().replace("-", "_"), FIELDS, n=1)
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(map(_shown, unknown))}",
            hint=(f"Did you mean {near[0]}? " if near else "")
            + "Known settings: "
            + ", ".join(sorted(FIELDS))
            + ".",
        )
    return data


def recorded_file(state_dir: str) -> str:
    """Where an install records its settings (RecordSettings), for the commands
    about what is installed (status, routes, join-command, reset) run without -c."""
    return f"{state_dir}/settings.yaml"


def as_config_file(settings: Settings, leave_out: Collection[str] = ()) -> str:
    """The settings that differ from the defaults, as a config file `load` reads back."""
    defaults = Settings()
    values = {}
    for name in FIELDS:
        value = getattr(settings, name)
        if name not in leave_out and value != getattr(defaults, name):
            values[name] = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump(values, sort_keys=True) if values else ""


# FRAKTI_INSTALL_* variables that are not settings: bootstrap.py's and cluster's own.
NOT_SETTINGS = ("PREFIX", "BIN_LINK", "BOOTSTRAP")


def from_env(environ: Mapping[str, str]) -> Dict[str, Any]:
    found = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :]
        if name.lower() in FIELDS:
            found[name.lower()] = value
        elif name not in NOT_SETTINGS:
            near = difflib.get_close_matches(name.lower(), FIELDS, n=1)
            log.warning(
                "ignoring %s: no such setting%s",
                key,
                f" (did you mean {ENV_PREFIX}{near[0].upper()}?)" if near else "",
            )
    return found


def proxies_from_env(environ: Mapping[str, str]) -> Dict[str, Any]:
    """HTTP(S)_PROXY / NO_PROXY (either case), the lowest layer above the defaults."""
    found = {}
    for name in ("http_proxy", "https_proxy", "no_proxy"):
        value = environ.get(name) or environ.get(name.upper())
        if value:
            found[name] = value
    return found


def load(
    config_file: Optional[Path] = None,
    flags: Optional[Mapping[str, Any]] = None,
    environ: Optional[Mapping[str, str]] = None,
    file_text: Optional[str] = None,
    flag_names: bool = True,
) -> Settings:
    """Merge the layers; mappings (mirrors, checksums) merge key by key.
    file_text: the config file's content, when the caller has read it.
    flag_names: messages name `flags` by their command-line options (else by key)."""
    environ = os.environ if environ is None else environ
    layers = [
        (proxies_from_env(environ), Origin("env-proxy")),
        (
            from_file(config_file, file_text) if config_file else {},
            Origin("file", str(config_file)),
        ),
        (from_env(environ), Origin("env")),
        (
            {k: v for k, v in (flags or {}).items() if v is not None and v != () and v != {}},
            Origin("flag") if flag_names else DEFAULT,
        ),
    ]
    merged: Dict[str, Any] = {}
    origins: Dict[str, Origin] = {}
    for layer, origin in layers:
        for name, raw in layer.items():
            value = _coerce(name, raw, origin)
            if isinstance(value, dict):
                merged[name] = {**merged.get(name, {}), **value}
            else:
                merged[name] = value
            origins[name] = origin
    return validate(Settings(**merged), origins)
