"""Pure parsers of what the host's programs print.

No I/O here: `Facts` runs the command and hands its output to one of these. Each
parser is tested against output captured from the real program
(tests/unit/fixtures/probes, recaptured by capture.sh there).
"""

from __future__ import annotations

import datetime
import json
import re
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


# --- dpkg-query -W -f='${Package}\t${db:Status-Abbrev}\t${Version}\n' ------------
def parse_dpkg_query(text: str) -> Dict[str, str]:
    """name -> version of the packages dpkg has installed. Status-Abbrev is want,
    state, error: "ii" installed, "hi" installed and held; "un", "hn" (held, not
    installed), "rc" (config files left) or "iU" (unpacked only) are not installed."""
    found = {}
    for line in text.splitlines():
        name, _, rest = line.partition("\t")
        status, _, version = rest.partition("\t")
        if status[1:2] == "i":
            found[name.split(":")[0]] = version.strip()
    return found


# --- rpm -q --qf '%{NAME}\t%{VERSION}-%{RELEASE}\n' -------------------------------
def parse_rpm_query(text: str) -> Dict[str, str]:
    """name -> version-release of the installed ones (rpm prints "package X is not
    installed", with no tab, for the others)."""
    found = {}
    for line in text.splitlines():
        name, sep, version = line.partition("\t")
        if sep:
            found[name] = version.strip()
    return found


# --- apt-cache policy NAME... ------------------------------------------------------
def parse_apt_candidates(text: str) -> Dict[str, Optional[str]]:
    """name -> its candidate version, None for "(none)" (a virtual package or one no
    index offers any more). A name no index knows prints nothing: it is absent."""
    found: Dict[str, Optional[str]] = {}
    current = None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            current = line.rstrip(":").split(":")[0]
            found[current] = None
        elif current and line.strip().startswith("Candidate:"):
            candidate = line.split(":", 1)[1].strip()
            found[current] = None if candidate == "(none)" else candidate
    return found


# --- gpg --show-keys --with-colons ---------------------------------------------
@dataclass(frozen=True)
class KeyPart:
    """A primary key or subkey: when it expires (None: never), whether revoked, whether it signs."""

    expires: Optional[datetime.datetime]
    revoked: bool
    signs: bool

    def usable_at(self, now: datetime.datetime) -> bool:
        return not self.revoked and (self.expires is None or self.expires > now)


@dataclass(frozen=True)
class SigningKey:
    fingerprint: str
    primary: KeyPart
    subkeys: Tuple[KeyPart, ...]

    def problem_at(self, now: datetime.datetime) -> Optional[str]:
        """Why apt or dnf would refuse what this key signs at `now` (None: usable).
        pkgs.k8s.io renewed expired keys under the same fingerprint
        (kubernetes/kubernetes#128609), so the fingerprint alone proves nothing."""
        if self.primary.revoked:
            return f"key {self.fingerprint} is revoked"
        if not self.primary.usable_at(now):
            assert self.primary.expires is not None
            return f"key {self.fingerprint} expired on {self.primary.expires.date().isoformat()}"
        signers = [self.primary] if self.primary.signs else []
        signers += [sub for sub in self.subkeys if sub.signs]
        if any(part.usable_at(now) for part in signers):
            return None
        ends = sorted(p.expires.date().isoformat() for p in signers if p.expires is not None)
        when = f" (the last expired on {ends[-1]})" if ends else ""
        return f"key {self.fingerprint} has no valid signing key or subkey{when}"


def _key_part(fields: List[str]) -> KeyPart:
    expires = (
        datetime.datetime.fromtimestamp(int(fields[6]), tz=datetime.timezone.utc)
        if len(fields) > 6 and fields[6].isdigit()
        else None
    )
    own_caps = fields[11] if len(fields) > 11 else ""
    return KeyPart(expires=expires, revoked=fields[1] == "r", signs="s" in own_caps)


def signing_keys(colons: str) -> List[SigningKey]:
    """The keys in `gpg --show-keys --with-colons` output: each primary key's
    fingerprint, expiry and signing subkeys (field 7 is the expiry in epoch
    seconds, field 12 the capabilities: lower case for this key part's own)."""
    keys: List[SigningKey] = []
    primary: Optional[KeyPart] = None
    fingerprint = ""
    subkeys: List[KeyPart] = []
    record = ""

    def flush() -> None:
        if primary is not None and fingerprint:
            keys.append(SigningKey(fingerprint, primary, tuple(subkeys)))

    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            flush()
            primary, fingerprint, subkeys, record = _key_part(fields), "", [], "pub"
        elif fields[0] == "sub" and primary is not None:
            subkeys.append(_key_part(fields))
            record = "sub"
        elif fields[0] in ("sec", "ssb"):
            record = fields[0]
        elif fields[0] == "fpr" and record == "pub" and len(fields) > 9:
            fingerprint = fields[9].upper()
            record = ""
    flush()
    return keys


# --- docker info --format '{{.X}}' ---------------------------------------------------
def parse_docker_info_value(returncode: int, stdout: str) -> Optional[str]:
    """The one value the template printed, or None (no daemon: exit 1, an empty line)."""
    value = stdout.strip()
    return value if returncode == 0 and value else None


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


# --- containerd --version ------------------------------------------------------
_RELEASE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_containerd_version(text: str) -> Optional[Tuple[int, int, int]]:
    """`containerd --version` ("containerd PACKAGE VERSION REVISION": Debian prints
    "... 1.6.20~ds1 1.6.20~ds1-1+deb12u3", Docker's containerd.io "... v2.1.5 <commit>"):
    the release as (major, minor, patch), or None."""
    words = text.split()
    for word in words[2:3] + words[1:2] + words[3:]:  # the version is the third word
        match = _RELEASE.match(word)
        if match:
            return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    return None


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
