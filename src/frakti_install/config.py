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
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple

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


def _network(value: str, name: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ConfigError(
            f"{name} {value!r} is not a valid IPv4 network ({exc})",
            hint="Write it as ADDRESS/PREFIX with no host bits set, e.g. 10.244.0.0/16.",
        ) from None


def validate(settings: Settings) -> Settings:
    pod = _network(settings.pod_cidr, "pod_cidr")
    service = _network(settings.service_cidr, "service_cidr")
    node = pod if settings.node_subnet == "auto" else _network(settings.node_subnet, "node_subnet")
    if not node.subnet_of(pod):
        raise ConfigError(
            f"node_subnet {node} is not inside pod_cidr {pod}",
            hint="Pick a node subnet out of the cluster's pod CIDR, e.g. 10.244.1.0/24.",
        )
    if pod.overlaps(service):
        raise ConfigError(f"pod_cidr {pod} overlaps service_cidr {service}")
    for name in ("advertise_address", "node_ip"):
        value = getattr(settings, name)
        if value:
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise ConfigError(f"{name} {value!r} is not an IPv4 address") from None
    if settings.runtime not in runtime_names():
        raise unknown_runtime(settings.runtime)
    if settings.cgroup_driver not in CGROUP_DRIVERS:
        raise ConfigError(
            f"cgroup_driver {settings.cgroup_driver!r} is not one of {', '.join(CGROUP_DRIVERS)}"
        )
    tables = artifact_tables()
    kinds = {kind for table in tables for kind in table["bases"]}
    for kind, url in settings.mirrors.items():
        if kind not in kinds:
            raise ConfigError(
                f"unknown mirror kind {kind!r}", hint="Known kinds: " + ", ".join(sorted(kinds))
            )
        if not re.match(r"^(https?|file)://", url):
            raise ConfigError(f"mirror for {kind} must be an http(s):// or file:// URL: {url!r}")
    names = {name for table in tables for name in table["artifacts"]}
    for name, value in list(settings.checksums.items()) + [
        (n, "-") for n in settings.allow_unverified
    ]:
        if name not in names:
            raise ConfigError(
                f"unknown artifact {name!r}", hint="Known artifacts: " + ", ".join(sorted(names))
            )
        if value != "-" and not SHA256_RE.match(value):
            raise ConfigError(f"checksum for {name} is not 64 lowercase hex digits: {value!r}")
    signing_keys = {
        name
        for table in tables
        for name, entry in table["artifacts"].items()
        if entry.get("sha256") == "fingerprint"
    }
    for name, value in settings.key_fingerprints.items():
        if name not in signing_keys:
            raise ConfigError(
                f"key_fingerprints: {name!r} is not a signing key",
                hint="Signing keys: " + ", ".join(sorted(signing_keys)),
            )
        for fingerprint in split_fingerprints(value):
            if not FINGERPRINT_RE.match(fingerprint):
                raise ConfigError(
                    f"key_fingerprints: {fingerprint!r} for {name} is not 40 hex digits"
                )
    if settings.node_subnet == "auto" and pod.prefixlen > NODE_PREFIX:
        raise ConfigError(
            f"pod_cidr {pod} cannot hold a /{NODE_PREFIX} per node (node_subnet auto)",
            hint=f"Use a pod CIDR of /{NODE_PREFIX - 8} to /{NODE_PREFIX - 1}, e.g. 10.244.0.0/16.",
        )
    host, _, port = settings.hyper_grpc.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"hyper_grpc {settings.hyper_grpc!r} is not HOST:PORT",
            hint="Write it like 127.0.0.1:22318 (hyperd's gRPC address).",
        )
    if settings.node_ready_timeout <= 0:
        raise ConfigError(
            f"node_ready_timeout {settings.node_ready_timeout} must be a positive number of seconds"
        )
    if not 0 < settings.streaming_port < 65536:
        raise ConfigError(f"streaming_port {settings.streaming_port} is not a TCP port")
    if settings.verify_timeout <= 0:
        raise ConfigError(
            f"verify_timeout {settings.verify_timeout} must be a positive number of seconds"
        )
    if settings.lock_wait < 0:
        raise ConfigError(f"lock_wait {settings.lock_wait} must be 0 or more seconds")
    if not TIME_SPAN_RE.match(settings.routes_sync_interval):
        raise ConfigError(
            f"routes_sync_interval {settings.routes_sync_interval!r} is not a time span",
            hint="Write a number and a unit (30s, 5min, 1h), or off to keep no timer.",
        )
    return settings  # the profile checks its versions (runtimes.load_settings)


def runtime_names() -> List[str]:
    """The runtime profiles: the modules of the runtimes package (found without
    importing them, so the settings layer need not know any profile)."""
    folder = Path(__file__).parent / "runtimes"
    return sorted(
        info.name for info in pkgutil.iter_modules([str(folder)]) if info.name != "base"
    )


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


def _coerce(name: str, value: Any) -> Any:
    default = FIELDS[name].default
    if name in ("mirrors", "checksums", "key_fingerprints"):
        if isinstance(value, str):
            value = parse_pairs([value], name)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping of NAME: VALUE")
        return {str(k): str(v).strip() for k, v in value.items()}
    if name in ("allow_unverified", "ignore_preflight_errors"):
        if isinstance(value, str):
            items = value.split(",")
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(
                f"{name} must be a list of names (or NAME,NAME), not {value!r}",
                hint=f"Write it like {name}: [Swap, KVM].",
            )
        return tuple(str(item).strip() for item in items if str(item).strip())
    if isinstance(value, (dict, list)) and not isinstance(default, tuple):
        raise ConfigError(f"{name} must be a single value, not a {type(value).__name__}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name} must be true or false, not {value!r}")
    if isinstance(default, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    return None if value is None else str(value)


def split_fingerprints(value: str) -> List[str]:
    """'DE15 B144 ..., AB12...' -> ['DE15B144...', 'AB12...']"""
    return [f.replace(" ", "").upper() for f in value.split(",") if f.strip()]


def parse_pairs(items: List[str], what: str) -> Dict[str, str]:
    """['kubernetes=http://m/k8s', ...] -> {'kubernetes': 'http://m/k8s'}.

    Comma lists are allowed (a=1,b=2); a name given twice collects its values
    comma-separated (for several fingerprints of one key)."""
    pairs: Dict[str, str] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key or not value:
                raise ConfigError(f"{what}: expected NAME=VALUE, got {part!r}")
            key = key.strip()
            pairs[key] = f"{pairs[key]},{value.strip()}" if key in pairs else value.strip()
    return pairs


def read_yaml(path: Path, what: str) -> Any:
    """A user's YAML file; an unreadable or malformed one is a ConfigError naming `what`."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#x})",
            hint="Save it as UTF-8.",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None


def from_file(path: Path, text: Optional[str] = None) -> Dict[str, Any]:
    """The settings in a config file (or in `text`, read from it by the Host)."""
    if text is None:
        data = read_yaml(path, "config file")
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    not_names = [key for key in data if not isinstance(key, str)]
    if not_names:
        raise ConfigError(
            f"config file {path}: {not_names[0]!r} is not a setting name",
            hint="Keys are setting names, e.g. pod_cidr: 10.244.0.0/16.",
        )
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}",
            hint="Known settings: " + ", ".join(sorted(FIELDS)) + ".",
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
) -> Settings:
    """Merge the layers; mappings (mirrors, checksums) merge key by key.
    file_text: the config file's content, when the caller has read it."""
    environ = os.environ if environ is None else environ
    layers = [
        proxies_from_env(environ),
        from_file(config_file, file_text) if config_file else {},
        from_env(environ),
        {k: v for k, v in (flags or {}).items() if v is not None and v != () and v != {}},
    ]
    merged: Dict[str, Any] = {}
    for layer in layers:
        for name, raw in layer.items():
            value = _coerce(name, raw)
            if isinstance(value, dict):
                merged[name] = {**merged.get(name, {}), **value}
            else:
                merged[name] = value
    return validate(Settings(**merged))
