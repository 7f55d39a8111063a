"""Pure parsers of what the host's programs print.

No I/O here: `Facts` runs the command and hands its output to one of these. Each
parser is tested against output captured from the real program
(tests/unit/fixtures/probes, recaptured by capture.sh there).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

import tomlkit
from tomlkit.exceptions import TOMLKitError


def tail(text: str, lines: int = 3) -> str:
    """The last lines of a program's output, on one line."""
    return " ".join(line.strip() for line in text.strip().splitlines()[-lines:])


# --- apt-mark showhold -----------------------------------------------------------
def parse_showhold(text: str) -> FrozenSet[str]:
    """The held packages, one a line."""
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


# --- ip -4 route show ----------------------------------------------------------
def parse_ip_routes(text: str) -> Dict[str, str]:
    """Destination -> gateway of the routes that go via a gateway."""
    routes = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "via":
            routes[fields[0]] = fields[2]
    return routes


def parse_route_destinations(text: str) -> List[str]:
    """Every destination but the default of `ip -4 route show`: the networks the host
    reaches on a link or through a gateway."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] in ROUTE_TYPES:  # "unreachable 10.9.0.0/16", ...
            fields = fields[1:]
        if fields and fields[0] != "default":
            found.append(fields[0])
    return found


# ip-route(8): the TYPE that may come before a route's destination
ROUTE_TYPES = frozenset(
    ("unicast", "unreachable", "blackhole", "prohibit", "local", "broadcast", "throw", "nat")
    + ("anycast", "multicast")
)


# --- ip -4 route show table local -------------------------------------------------
def parse_local_addresses(text: str) -> List[str]:
    """The host's own IPv4 addresses: the `local ADDRESS` routes the kernel adds for
    each, less loopback's range."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        local = len(fields) >= 2 and fields[0] == "local" and "/" not in fields[1]
        if local and not fields[1].startswith("127."):
            found.append(fields[1])
    return found


# --- modinfo -F filename ---------------------------------------------------------
def parse_modinfo_filename(text: str) -> Optional[str]:
    """The module's file ("(builtin)" for one built into the kernel), or None."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


# --- iptables-save ---------------------------------------------------------------
@dataclass(frozen=True)
class IptablesDump:
    text: str  # the dump as printed, to hand back to iptables-restore
    tables: Dict[str, Tuple[str, ...]]  # table -> the chains it declares (":NAME ...")

    def jump_targets(self) -> Tuple[str, ...]:
        """Every chain a rule jumps (-j) or goes (-g) to."""
        targets: List[str] = []
        for line in self.text.splitlines():
            if not line.startswith("-A "):
                continue
            try:
                words = shlex.split(line)
            except ValueError:  # an unbalanced quote in a comment
                words = line.split()
            targets.extend(
                target
                for flag, target in zip(words, words[1:])
                if flag in ("-j", "-g", "--jump", "--goto")
            )
        return tuple(targets)

    def has_chains(self, prefixes: Tuple[str, ...]) -> bool:
        """Is a chain named with one of the prefixes declared or jumped to?"""
        declared = (chain for chains in self.tables.values() for chain in chains)
        return any(chain.startswith(prefixes) for chain in declared) or any(
            target.startswith(prefixes) for target in self.jump_targets()
        )


def parse_iptables_save(text: str) -> IptablesDump:
    tables: Dict[str, List[str]] = {}
    table: Optional[str] = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            tables.setdefault(table, [])
        elif line.startswith(":") and table is not None and line[1:].split():
            tables[table].append(line[1:].split()[0])
    return IptablesDump(text, {name: tuple(chains) for name, chains in tables.items()})


# --- containerd config dump ------------------------------------------------------
@dataclass(frozen=True)
class ContainerdDump:
    ok: bool
    error: str = ""  # why not ok: the end of what containerd printed
    values: Dict[str, Any] = field(default_factory=dict)  # the merged configuration
    version: int = 1  # the dump's config version (containerd 2.x migrates to 3)

    def get(self, *path: str, default: Any = None) -> Any:
        node: Any = self.values
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node


def parse_containerd_dump(stdout: str, returncode: int = 0, stderr: str = "") -> ContainerdDump:
    """`containerd --config FILE config dump`: the configuration as containerd merged it."""
    if returncode != 0 or not stdout.strip():
        reason = tail(stderr or stdout)
        return ContainerdDump(False, reason or f"containerd exited {returncode}, printing nothing")
    try:
        values = tomlkit.parse(stdout).unwrap()
    except (TOMLKitError, ValueError) as exc:
        return ContainerdDump(False, tail(stderr or stdout) or str(exc))
    version = values.get("version", 1)
    return ContainerdDump(True, "", values, version if isinstance(version, int) else 1)


# --- kubectl ... -o json ---------------------------------------------------------
@dataclass(frozen=True)
class DryRun:
    ok: bool
    obj: Optional[Dict[str, Any]]  # the object the API server (would have) stored
    error: str


def parse_json_object(text: str) -> Optional[Dict[str, Any]]:
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def parse_kubectl_json(returncode: int, stdout: str, stderr: str) -> DryRun:
    """`kubectl ... -o json`: the object it printed, or why there is none."""
    if returncode != 0:
        return DryRun(False, None, stderr.strip() or stdout.strip() or "kubectl failed")
    obj = parse_json_object(stdout)
    if obj is None:
        return DryRun(False, None, "kubectl printed no object")
    return DryRun(True, obj, "")


# --- systemctl show --------------------------------------------------------------
def parse_systemctl_blocks(text: str) -> List[Dict[str, str]]:
    """`systemctl show UNIT...`: one block of KEY=VALUE lines per unit, in order."""
    blocks: List[Dict[str, str]] = []
    current: Dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
        elif "=" in line:
            key, _, value = line.partition("=")
            current[key] = value
    return blocks


def parse_systemctl_show(text: str) -> Dict[str, Dict[str, str]]:
    """The blocks keyed by their Id= (the canonical name when a unit was asked by alias)."""
    return {block["Id"]: block for block in parse_systemctl_blocks(text) if "Id" in block}


# --- /etc/docker/daemon.json -----------------------------------------------------
def parse_docker_cgroup_driver(json_text: Optional[str]) -> Optional[str]:
    """native.cgroupdriver from daemon.json's exec-opts, or None."""
    options = parse_json_object(json_text or "") or {}
    exec_opts = options.get("exec-opts", [])
    for option in exec_opts if isinstance(exec_opts, list) else []:
        key, _, value = str(option).partition("=")
        if key.strip() == "native.cgroupdriver":
            return value.strip()
    return None
