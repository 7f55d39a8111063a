"""A whole cluster from one inventory file: the master first, then the workers.

The inventory (``kind: Cluster``, see docs/cluster.md and examples/cluster.yaml)
names the hosts, how frakti-install gets onto them and the settings they share.
:func:`load_inventory` reads and validates it; :func:`run_cluster` hands the
SSH fan-out to Ansible: it writes an Ansible inventory and the extra variables
into a private temporary directory and runs ``ansible-playbook`` on the
playbook shipped in ``data/cluster-playbook.yml``. Each host then runs
frakti-install itself (``allinone`` on the master, ``node`` on the workers,
``routes`` everywhere), which is what makes a second run change nothing.

Ansible (``ansible-core``) is an optional dependency: pip install
'frakti-install[cluster]'. Engine code: no UI here (the CLI renders, asks,
and maps errors to exit codes).
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from frakti_install import config as config_module
from frakti_install import runtimes
from frakti_install.errors import Aborted, ConfigError, ExitCode

__all__ = [
    "API_VERSION",
    "KIND",
    "PLAYBOOK",
    "PLAYBOOKS",
    "REMOTE_CONFIG",
    "ClusterHost",
    "InstallSource",
    "Inventory",
    "SSHTarget",
    "ansible_playbook",
    "extra_vars",
    "find_bootstrap",
    "load_inventory",
    "playbook_argv",
    "render_ansible_inventory",
    "run_cluster",
]

API_VERSION = "frakti-install/v1"
KIND = "Cluster"
ROLES = ("master", "worker")
PLAYBOOK = Path(__file__).parent / "data" / "cluster-playbook.yml"
# `cluster -f FILE ACTION`: the playbook of each action
PLAYBOOKS = {
    "install": PLAYBOOK,
    "upgrade": Path(__file__).parent / "data" / "cluster-upgrade-playbook.yml",
}
ADMIN_CONF = "/etc/kubernetes/admin.conf"  # the master's, lent to each worker for its drain
# Where the playbook puts things on each host.
REMOTE_DIR = "/var/cache/frakti-install/cluster"  # bootstrap.py, the bundle or package (0700)
REMOTE_CONFIG = "/etc/frakti-install/cluster.yaml"  # the settings, rendered per host (0600)
REMOTE_COMMAND = "/usr/local/bin/frakti-install"  # the link bootstrap.py writes
# Settings the inventory may not set cluster-wide: the join is the playbook's
# business (the token is created on the master during the run), and one
# node_subnet for every host would give them all the same pod subnet.
RESERVED_SETTINGS = {
    "join_endpoint": "the playbook joins the workers to the master itself",
    "join_token": "the playbook creates a short-lived token on the master during the run",
    "join_ca_hash": "the playbook takes it from the master during the run",
    "node_subnet": "a pod subnet is per host: set nodeSubnet on the host instead",
}
INSTALL_SOURCES = {"bundle": "bundle", "fromPath": "from_path", "version": "version"}
ANSIBLE_HINT = "pip install 'frakti-install[cluster]' (it brings ansible-core), then run again."
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.:_-]*[A-Za-z0-9])?$")
# A source tree is packed for the hosts without what bootstrap.py's copy leaves out too.
SOURCE_IGNORE = {
    ".git", ".venv", ".vagrant", ".tox", ".nox", "build", "dist", "__pycache__",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".join",
}  # fmt: skip


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class SSHTarget:
    address: str
    user: str = "root"
    port: int = 22
    key_path: Optional[Path] = None  # absolute, checked to exist


@dataclass(frozen=True)
class ClusterHost:
    name: str  # the Ansible inventory name: the address
    role: str  # "master" or "worker"
    ssh: SSHTarget
    node_subnet: str = "auto"


@dataclass(frozen=True)
class InstallSource:
    """How frakti-install gets onto each host (exactly one of the three)."""

    bundle: Optional[Path] = None  # an offline bundle (.tar.gz or directory)
    from_path: Optional[Path] = None  # a wheel, an sdist or a source tree
    version: Optional[str] = None  # this version from the package index
    pip_args: Tuple[str, ...] = ()  # passed to bootstrap.py as --pip-arg

    @property
    def kind(self) -> str:
        if self.bundle is not None:
            return "bundle"
        if self.from_path is not None:
            return "tree" if self.from_path.is_dir() else "file"
        return "index"


@dataclass(frozen=True)
class Inventory:
    name: str
    hosts: Tuple[ClusterHost, ...]
    install: InstallSource
    config: Mapping[str, Any] = field(default_factory=dict)  # settings for every host
    path: Optional[Path] = None  # the file it was read from

    @property
    def master(self) -> ClusterHost:
        return next(host for host in self.hosts if host.role == "master")

    @property
    def workers(self) -> Tuple[ClusterHost, ...]:
        return tuple(host for host in self.hosts if host.role == "worker")


# --------------------------------------------------------------------------- loading


class _Reader:
    """Validation helpers that name the file and the field in every message."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, where: str, message: str, hint: str = "") -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {message}", hint=hint)

    def mapping(self, value: Any, where: str) -> Dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(where, f"must be a mapping, not {type(value).__name__}")
        return value

    def known_keys(self, data: Mapping[str, Any], where: str, known: Sequence[str]) -> None:
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise self.error(
                where, "unknown field(s) " + ", ".join(unknown), "Known: " + ", ".join(known) + "."
            )

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, f"must be a non-empty string, not {value!r}")
        return value.strip()

    def local_path(self, value: Any, where: str) -> Path:
        path = Path(os.path.expanduser(self.string(value, where)))
        if not path.is_absolute():
            path = self.path.parent / path
        path = Path(os.path.abspath(path))
        if not path.exists():
            raise self.error(where, f"{path} does not exist")
        return path


def load_inventory(path: Path) -> Inventory:
    """Read and validate a ``kind: Cluster`` inventory (ConfigError names host and field)."""
    path = Path(path)
    reader = _Reader(path)
    data = config_module.read_yaml(path, "the cluster inventory")
    if not isinstance(data, dict):
        raise ConfigError(f"the cluster inventory {path} must be a mapping (kind: Cluster)")
    reader.known_keys(data, "top level", ("apiVersion", "kind", "metadata", "spec"))
    if data.get("apiVersion") != API_VERSION:
        raise reader.error(
            "apiVersion", f"must be {API_VERSION}, not {data.get('apiVersion')!r}"
        )  # fmt: skip
    if data.get("kind") != KIND:
        raise reader.error("kind", f"must be {KIND}, not {data.get('kind')!r}")
    metadata = reader.mapping(data.get("metadata"), "metadata")
    name = str(metadata.get("name") or "cluster")
    if not NAME_RE.match(name):
        raise reader.error("metadata.name", f"{name!r} is not a name (letters, digits, . _ -)")
    spec = reader.mapping(data.get("spec"), "spec")
    reader.known_keys(spec, "spec", ("hosts", "install", "config"))
    settings = _config(reader, spec.get("config"))
    hosts = _hosts(reader, spec.get("hosts"), settings)
    install = _install(reader, spec.get("install"))
    return Inventory(name=name, hosts=hosts, install=install, config=settings, path=path)


def _config(reader: _Reader, value: Any) -> Dict[str, Any]:
    settings = reader.mapping(value, "spec.config")
    for key in settings:
        if key not in config_module.FIELDS:
            raise reader.error(
                f"spec.config.{key}",
                "unknown setting",
                "Known settings: " + ", ".join(sorted(config_module.FIELDS)) + ".",
            )
        if key in RESERVED_SETTINGS:
            raise reader.error(f"spec.config.{key}", "not allowed here: " + RESERVED_SETTINGS[key])
    _validate_settings(reader, "spec.config", settings)
    return dict(settings)


def _validate_settings(reader: _Reader, where: str, settings: Mapping[str, Any]) -> None:
    """The same checks frakti-install makes on each host, made here before any SSH."""
    try:
        runtimes.load_settings(None, flags=dict(settings), environ={}, flag_names=False)
    except ConfigError as exc:
        raise reader.error(where, exc.message, exc.hint) from None


def _hosts(reader: _Reader, value: Any, settings: Mapping[str, Any]) -> Tuple[ClusterHost, ...]:
    if not isinstance(value, list) or not value:
        raise reader.error("spec.hosts", "must be a non-empty list of hosts")
    hosts: List[ClusterHost] = []
    seen: Dict[str, str] = {}
    subnets: Dict[ipaddress.IPv4Network, str] = {}
    for index, item in enumerate(value):
        where = f"spec.hosts[{index}]"
        item = reader.mapping(item, where)
        ssh = reader.mapping(item.get("ssh"), f"{where}.ssh")
        address = ssh.get("address")
        if isinstance(address, str) and address.strip():
            where = f"{where} ({address.strip()})"  # name the host in every message
        reader.known_keys(item, where, ("role", "ssh", "nodeSubnet"))
        role = item.get("role")
        if role not in ROLES:
            raise reader.error(
                f"{where}.role", f"{role!r} is not a role", "Roles: master (exactly one), worker."
            )
        target = _ssh(reader, ssh, f"{where}.ssh")
        if target.address in seen:
            raise reader.error(
                f"{where}.ssh.address",
                f"{target.address} is listed twice (also {seen[target.address]})",
                "Each host appears once in spec.hosts.",
            )
        seen[target.address] = where
        subnet = str(item.get("nodeSubnet") or "auto").strip()
        if subnet != "auto":
            _validate_settings(reader, f"{where}.nodeSubnet", {**settings, "node_subnet": subnet})
            network = ipaddress.IPv4Network(subnet)
            for other, owner in subnets.items():
                if network.overlaps(other):
                    raise reader.error(
                        f"{where}.nodeSubnet", f"{subnet} overlaps {other} of {owner}"
                    )  # fmt: skip
            subnets[network] = where
        hosts.append(ClusterHost(target.address, role, target, subnet))
    masters = [host.name for host in hosts if host.role == "master"]
    if len(masters) != 1:
        found = ", ".join(masters) if masters else "none"
        raise reader.error(
            "spec.hosts", f"exactly one host must have role: master (found {found})"
        )  # fmt: skip
    return tuple(hosts)


def _ssh(reader: _Reader, ssh: Mapping[str, Any], where: str) -> SSHTarget:
    reader.known_keys(ssh, where, ("address", "user", "port", "keyPath"))
    address = reader.string(ssh.get("address"), f"{where}.address")
    if not HOST_RE.match(address):
        raise reader.error(f"{where}.address", f"{address!r} is not a host name or IP address")
    user = reader.string(ssh.get("user", "root"), f"{where}.user")
    port = ssh.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise reader.error(f"{where}.port", f"{port!r} is not a TCP port (1-65535)")
    key_path = None
    if ssh.get("keyPath") is not None:
        key_path = reader.local_path(ssh["keyPath"], f"{where}.keyPath")
        if not key_path.is_file():
            raise reader.error(f"{where}.keyPath", f"{key_path} is not a file")
    return SSHTarget(address=address, user=user, port=port, key_path=key_path)


def _install(reader: _Reader, value: Any) -> InstallSource:
    install = reader.mapping(value, "spec.install")
    reader.known_keys(install, "spec.install", (*INSTALL_SOURCES, "pipArgs"))
    given = [key for key in INSTALL_SOURCES if install.get(key) is not None]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        raise reader.error(
            "spec.install",
            f"give exactly one source of frakti-install (found {found})",
            "bundle: FILE (offline bundle), fromPath: PATH (wheel, sdist or source tree) "
            "or version: X.Y.Z (package index).",
        )
    pip_args = install.get("pipArgs") or []
    if not isinstance(pip_args, list) or not all(isinstance(a, str) and a for a in pip_args):
        raise reader.error("spec.install.pipArgs", "must be a list of pip options (strings)")
    key = given[0]
    if key == "version":
        version = str(install["version"]).strip()
        if not re.match(r"^[0-9][0-9A-Za-z.+!-]*$", version):
            raise reader.error("spec.install.version", f"{version!r} is not a version")
        return InstallSource(version=version, pip_args=tuple(pip_args))
    path = reader.local_path(install[key], f"spec.install.{key}")
    if (
        key == "fromPath"
        and path.is_dir()
        and not ((path / "pyproject.toml").is_file() or (path / "setup.py").is_file())
    ):
        raise reader.error("spec.install.fromPath", f"{path} is not a Python source tree")
    if key == "bundle":
        return InstallSource(bundle=path, pip_args=tuple(pip_args))
    return InstallSource(from_path=path, pip_args=tuple(pip_args))


# --------------------------------------------------------------------------- Ansible's input


def render_ansible_inventory(inv: Inventory) -> str:
    """A YAML inventory: groups ``master`` and ``workers`` with the SSH details."""

    def host_vars(host: ClusterHost) -> Dict[str, Any]:
        values: Dict[str, Any] = {
            "ansible_host": host.ssh.address,
            "ansible_user": host.ssh.user,
            "ansible_port": host.ssh.port,
        }
        if host.ssh.key_path is not None:
            values["ansible_ssh_private_key_file"] = str(host.ssh.key_path)
        if host.node_subnet != "auto":
            values["frakti_node_subnet"] = host.node_subnet
        return values

    data = {
        "all": {
            "children": {
                "master": {"hosts": {inv.master.name: host_vars(inv.master)}},
                "workers": {"hosts": {host.name: host_vars(host) for host in inv.workers}},
            }
        }
    }
    header = f"# frakti-install cluster {inv.name}: generated from {inv.path}, do not edit\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def find_bootstrap() -> Path:
    """bootstrap.py, copied to every host: $FRAKTI_INSTALL_BOOTSTRAP, shipped data, or the tree."""
    candidates = [
        os.environ.get("FRAKTI_INSTALL_BOOTSTRAP", ""),
        str(Path(__file__).parent / "data" / "bootstrap.py"),
        str(Path(__file__).resolve().parents[2] / "bootstrap.py"),  # a source checkout
    ]
    for candidate in filter(None, candidates):
        if Path(candidate).is_file():
            return Path(candidate).resolve()
    raise ConfigError(
        "cannot find bootstrap.py, which installs frakti-install on each host",
        hint="Set FRAKTI_INSTALL_BOOTSTRAP to its path (it is at the top of the source tree).",
    )


def _pack_tree(tree: Path, dest: Path) -> Path:
    """A source tree as a reproducible .tar.gz that pip installs like an sdist."""
    top = "frakti-install-source"
    raw = io.BytesIO()

    def skip(name: str) -> bool:
        return name in SOURCE_IGNORE or name.endswith(".egg-info")

    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in os.walk(tree):
            dirs[:] = sorted(d for d in dirs if not skip(d))
            for name in sorted(files):
                full = Path(root) / name
                if skip(name) or not (full.is_file() or full.is_symlink()):
                    continue
                info = tar.gettarinfo(str(full), f"{top}/{full.relative_to(tree).as_posix()}")
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if info.isfile():
                    with open(full, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
    with gzip.GzipFile(dest, mode="wb", mtime=0) as packed:
        packed.write(raw.getvalue())
    return dest


def upgrade_arguments(
    kubernetes_version: Optional[str], kata_version: Optional[str], checksums: Mapping[str, str]
) -> Tuple[List[str], List[str]]:
    """The options of the master's `frakti-install upgrade` and of each worker's.
    Kata is each node's own, so every node gets --kata-version and the sums; a
    worker follows its master's Kubernetes, so only the master gets a version."""
    node = ["--kata-version", kata_version] if kata_version else []
    for name, digest in sorted(checksums.items()):
        node += ["--checksum", f"{name}={digest}"]
    master = ["--kubernetes-version", kubernetes_version] if kubernetes_version else []
    return master + node, node


def extra_vars(
    inv: Inventory,
    *,
    dry_run: bool,
    workdir: Path,
    upgrade_args: Sequence[str] = (),
    worker_upgrade_args: Sequence[str] = (),
) -> Dict[str, Any]:
    """What the playbook is told (-e @FILE): the install source, the settings, dry run or
    not, and for an upgrade the master's options and the workers'."""
    install = inv.install
    source: Dict[str, Any] = {"kind": install.kind, "local": "", "name": "", "version": ""}
    if install.bundle is not None:
        source.update(local=str(install.bundle), name=install.bundle.name)
    elif install.from_path is not None and install.from_path.is_dir():
        packed = _pack_tree(install.from_path, workdir / "frakti-install-source.tar.gz")
        source.update(kind="file", local=str(packed), name=packed.name)
    elif install.from_path is not None:
        source.update(local=str(install.from_path), name=install.from_path.name)
    else:
        source["version"] = install.version or ""
    return {
        "frakti_cluster_name": inv.name,
        "frakti_dry_run": dry_run,
        "frakti_bootstrap": str(find_bootstrap()),
        "frakti_source": source,
        "frakti_pip_args": list(install.pip_args),
        "frakti_config": dict(inv.config),
        "frakti_remote_dir": REMOTE_DIR,
        "frakti_config_path": REMOTE_CONFIG,
        "frakti_command": REMOTE_COMMAND,
        "frakti_upgrade_args": list(upgrade_args),
        "frakti_worker_upgrade_args": list(worker_upgrade_args),
        "frakti_admin_conf": ADMIN_CONF,
    }


def ansible_playbook() -> Optional[str]:
    """The ansible-playbook command: on PATH, or beside this Python (same virtualenv)."""
    found = shutil.which("ansible-playbook")
    if found:
        return found
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if os.access(beside, os.X_OK) else None


def playbook_argv(
    executable: str, inventory: Path, variables: Path, action: str = "install"
) -> List[str]:
    return [executable, "-i", str(inventory), str(PLAYBOOKS[action]), "-e", f"@{variables}"]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def describe(inv: Inventory, action: str = "install") -> str:
    """What a run will do, in a few lines (for the question before a real run)."""
    if action == "upgrade":
        lines = [f"cluster {inv.name}: frakti-install ({_source_text(inv.install)}) on every "
                 "host, then `upgrade`, one node at a time, stopping at the first that fails:"]
        lines.append(f"  master  {inv.master.ssh.user}@{inv.master.name}: upgrade")
        for host in inv.workers:
            lines.append(f"  worker  {host.ssh.user}@{host.name}: drained (the master's "
                         "kubeconfig lent for it), upgraded to the master's release, uncordoned")
        return "\n".join(lines)
    lines = [
        f"cluster {inv.name}: frakti-install ({_source_text(inv.install)}) on every host, then"
    ]
    lines.append(f"  master  {inv.master.ssh.user}@{inv.master.name}: allinone")
    for host in inv.workers:
        lines.append(f"  worker  {host.ssh.user}@{host.name}: node (joins the master)")
    lines.append("  and the routes between the nodes' pod subnets on every host")
    return "\n".join(lines)


def _source_text(install: InstallSource) -> str:
    if install.bundle is not None:
        return f"bundle {install.bundle}"
    if install.from_path is not None:
        return f"from {install.from_path}"
    return f"version {install.version} from the package index"


Runner = Callable[..., Any]


def run_cluster(
    inv: Inventory,
    *,
    dry_run: bool,
    yes: bool,
    runner: Runner = subprocess.run,
    confirm: Optional[Callable[[str], bool]] = None,
    env: Optional[Mapping[str, str]] = None,
    action: str = "install",
    upgrade_args: Sequence[str] = (),
    worker_upgrade_args: Sequence[str] = (),
) -> int:
    """Install the cluster (or, dry run, show each host's plan) with ansible-playbook;
    for an upgrade, `upgrade_args` go to the master's `frakti-install upgrade`,
    `worker_upgrade_args` to each worker's.

    Returns 0 when every host succeeded, else ExitCode.COMMAND_FAILED (Ansible's
    own output says which host and task). A real run without ``yes`` asks
    ``confirm(describe(inv))`` first, and is refused without a ``confirm``.
    ``runner`` is called like subprocess.run(argv, env=..., check=False).
    """
    if action not in PLAYBOOKS:
        raise ConfigError(f"unknown cluster action {action!r}",
                          hint="Use one of: " + ", ".join(PLAYBOOKS) + ".")  # fmt: skip
    executable = ansible_playbook()
    if executable is None:
        raise ConfigError("ansible-playbook is not installed (the cluster command runs it)",
                          hint=ANSIBLE_HINT)  # fmt: skip
    if not PLAYBOOKS[action].is_file():
        raise ConfigError(f"the cluster playbook is missing: {PLAYBOOKS[action]}",
                          hint="Reinstall frakti-install.")  # fmt: skip
    if not dry_run and not yes:
        if confirm is None:
            raise Aborted("nothing was changed", hint="Run with --yes not to be asked.")
        if not confirm(describe(inv, action)):
            raise Aborted("nothing was changed", hint="Run with --yes not to be asked.")
    workdir = Path(tempfile.mkdtemp(prefix="frakti-install-cluster-"))  # 0700
    try:
        os.chmod(workdir, 0o700)
        inventory = workdir / "inventory.yml"
        variables = workdir / "vars.json"
        _write_private(inventory, render_ansible_inventory(inv))
        values = extra_vars(
            inv,
            dry_run=dry_run,
            workdir=workdir,
            upgrade_args=upgrade_args,
            worker_upgrade_args=worker_upgrade_args,
        )
        _write_private(variables, json.dumps(values, indent=1) + "\n")
        environment = dict(os.environ if env is None else env)
        environment.setdefault("ANSIBLE_RETRY_FILES_ENABLED", "False")
        environment.setdefault("ANSIBLE_LOCAL_TEMP", str(workdir / "ansible-tmp"))
        argv = playbook_argv(executable, inventory, variables, action)
        try:
            result = runner(argv, env=environment, check=False)
        except FileNotFoundError:
            raise ConfigError(f"cannot run {executable}", hint=ANSIBLE_HINT) from None
        return ExitCode.OK if result.returncode == 0 else ExitCode.COMMAND_FAILED
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
