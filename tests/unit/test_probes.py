"""The probes' parsers against output captured from the real programs, and the Facts
methods that run them (through a runner that answers with those captures).

Fixtures: tests/unit/fixtures/probes/<probe>/<case>.json, written by capture.sh there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest

from frakti_install import probes
from frakti_install.facts import Facts
from frakti_install.host import CommandResult, Host

FIXTURES = Path(__file__).parent / "fixtures" / "probes"
KEYS = {"command", "program", "returncode", "stdout", "stderr", "expected"}


def capture(probe: str, case: str) -> Dict[str, Any]:
    return json.loads((FIXTURES / probe / f"{case}.json").read_text())


def all_captures() -> List[Tuple[str, str]]:
    return sorted((p.parent.name, p.stem) for p in FIXTURES.glob("*/*.json"))


# --- what each parser makes of a capture, in the fixtures' "expected" form ------------
def containerd_result(c: Dict[str, Any]) -> Any:
    dump = probes.parse_containerd_dump(c["stdout"], c["returncode"], c["stderr"])
    return {
        "ok": dump.ok,
        "version": dump.version,
        "error": dump.error,
        "keys": sorted(dump.values),
        "get": [[path, dump.get(*path)] for path, _ in c["expected"]["get"]],
    }


def iptables_result(c: Dict[str, Any]) -> Any:
    dump = probes.parse_iptables_save(c["stdout"])
    assert dump.text == c["stdout"]
    return {
        "tables": {table: list(chains) for table, chains in dump.tables.items()},
        "has_chains": [
            [prefixes, dump.has_chains(tuple(prefixes))]
            for prefixes, _ in c["expected"]["has_chains"]
        ],
    }


def kubectl_result(c: Dict[str, Any]) -> Any:
    answer = probes.parse_kubectl_json(c["returncode"], c["stdout"], c["stderr"])
    return {"ok": answer.ok, "obj": answer.obj, "error": answer.error}


PARSERS: Dict[str, Callable[[Dict[str, Any]], Any]] = {
    "apt-cache": lambda c: probes.parse_apt_candidates(c["stdout"]),
    "apt-mark": lambda c: sorted(probes.parse_showhold(c["stdout"])),
    "containerd": containerd_result,
    "containerd-version": lambda c: {
        "release": list(probes.parse_containerd_version(c["stdout"]) or []) or None
    },
    "docker": lambda c: {"value": probes.parse_docker_info_value(c["returncode"], c["stdout"])},
    "dpkg-query": lambda c: probes.parse_dpkg_query(c["stdout"]),
    "gpg": lambda c: [key.fingerprint for key in probes.signing_keys(c["stdout"])],
    "id": lambda c: c["stdout"].strip(),
    "ip-route": lambda c: probes.parse_ip_routes(c["stdout"]),
    "iptables": iptables_result,
    "kubectl": kubectl_result,
    "modinfo": lambda c: {"filename": probes.parse_modinfo_filename(c["stdout"])},
    "rpm": lambda c: probes.parse_rpm_query(c["stdout"]),
    "systemctl": lambda c: probes.parse_systemctl_show(c["stdout"]),
}


def test_there_are_captures_of_every_probe() -> None:
    probes_captured = {probe for probe, _ in all_captures()}
    assert probes_captured == set(PARSERS)
    assert len(all_captures()) >= 20


@pytest.mark.parametrize("probe,case", all_captures())
def test_fixture_is_a_capture(probe: str, case: str) -> None:
    c = capture(probe, case)
    assert set(c) == KEYS
    assert c["expected"] is not None, "read the capture and fill in its expected value"
    assert isinstance(c["command"], list) and c["command"]
    assert c["program"].strip() and isinstance(c["returncode"], int)


@pytest.mark.parametrize("probe,case", all_captures())
def test_parser_on_capture(probe: str, case: str) -> None:
    c = capture(probe, case)
    assert PARSERS[probe](c) == c["expected"]


@pytest.mark.parametrize("probe", sorted(PARSERS))
def test_captures_can_tell_a_constant_parser(probe: str) -> None:
    """Every probe with more than one capture has at least two different answers, so a
    parser that returns a constant fails one of them."""
    expected = [
        json.dumps(capture(probe, case)["expected"], sort_keys=True)
        for p, case in all_captures()
        if p == probe
    ]
    if len(expected) > 1:
        assert len(set(expected)) > 1


def test_containerd_dumps_cover_two_config_versions() -> None:
    versions = {
        capture("containerd", case)["expected"]["version"]
        for probe, case in all_captures()
        if probe == "containerd" and capture("containerd", case)["expected"]["ok"]
    }
    assert {2, 3} <= versions


# --- parsers on inputs no capture covers ------------------------------------------------
def test_has_chains_sees_a_jump_to_an_undeclared_chain() -> None:
    dump = probes.parse_iptables_save(
        "*filter\n:INPUT ACCEPT [0:0]\n"
        '-A INPUT -m comment --comment "kube -j proxy" -j KUBE-FIREWALL\n'
        "-A INPUT -s 10.0.0.0/8 -g CNI-x\nCOMMIT\n"
    )
    assert dump.tables == {"filter": ("INPUT",)}
    assert dump.jump_targets() == ("KUBE-FIREWALL", "CNI-x")
    assert dump.has_chains(("KUBE-",)) and dump.has_chains(("CNI-",))
    assert not dump.has_chains(("proxy",))  # inside the quoted comment, not a jump


def test_containerd_dump_that_is_not_toml() -> None:
    dump = probes.parse_containerd_dump("a\nb\nversion = [\nc = \n")
    assert not dump.ok and dump.error == "b version = [ c ="
    assert dump.get("version", default="none") == "none"
    assert probes.parse_containerd_dump("", 2, "").error == "containerd exited 2, printing nothing"


@pytest.mark.parametrize(
    "text,release",
    [
        # Docker's containerd.io (as its users post it: tag with a v, then the commit)
        ("containerd containerd.io v2.1.5 fcd43222d6b07379a4be9786bda52438f0dd16a1\n", (2, 1, 5)),
        ("", None),
        ("containerd: command not found\n", None),
    ],
)
def test_containerd_version_forms(text: str, release: Optional[Tuple[int, int, int]]) -> None:
    assert probes.parse_containerd_version(text) == release


def test_systemctl_blocks_keyed_by_id() -> None:
    # systemctl's layout (one KEY=VALUE block per unit, blank line between), typed here
    # because systemd is not PID 1 where the fixtures were captured.
    text = "Id=ssh.service\nMainPID=42\nEmpty=\n\nId=x.service\nLoadState=not-found\n"
    assert probes.parse_systemctl_show(text) == {
        "ssh.service": {"Id": "ssh.service", "MainPID": "42", "Empty": ""},
        "x.service": {"Id": "x.service", "LoadState": "not-found"},
    }
    assert probes.parse_systemctl_blocks("") == []


@pytest.mark.parametrize(
    "text,driver",
    [
        ('{"exec-opts": ["native.cgroupdriver=systemd"]}', "systemd"),
        ('{"exec-opts": ["a=b", " native.cgroupdriver = cgroupfs "]}', "cgroupfs"),
        ('{"exec-opts": "native.cgroupdriver=systemd"}', None),
        ('{"log-driver": "journald"}', None),
        ("[1, 2]", None),
        ("{not json", None),
        ("", None),
        (None, None),
    ],
)
def test_docker_cgroup_driver(text: Optional[str], driver: Optional[str]) -> None:
    assert probes.parse_docker_cgroup_driver(text) == driver


# --- Facts through a runner that answers with the captures -----------------------------
class Answers:
    """A runner: the first argv prefix that matches gives the result."""

    def __init__(self) -> None:
        self.answers: List[Tuple[Tuple[str, ...], CommandResult]] = []
        self.calls: List[Tuple[List[str], Optional[str], Optional[float]]] = []

    def add(self, prefix: Sequence[str], probe: str, case: str) -> None:
        c = capture(probe, case)
        result = CommandResult(list(prefix), c["returncode"], c["stdout"], c["stderr"])
        self.answers.insert(0, (tuple(prefix), result))

    def __call__(
        self,
        argv: Sequence[str],
        env: Optional[Mapping[str, str]],
        input: Optional[str],
        timeout: Optional[float],
    ) -> CommandResult:
        self.calls.append((list(argv), input, timeout))
        for prefix, result in self.answers:
            if tuple(argv[: len(prefix)]) == prefix:
                return CommandResult(list(argv), result.returncode, result.stdout, result.stderr)
        return CommandResult(list(argv), 127, "", f"{argv[0]}: command not found")

    def argvs(self) -> List[List[str]]:
        return [argv for argv, _, _ in self.calls]


@pytest.fixture
def answers() -> Answers:
    return Answers()


@pytest.fixture
def facts(tmp_path: Path, answers: Answers) -> Facts:
    return Facts(Host(root=tmp_path, runner=answers))


def put(facts: Facts, target: str, content: str = "", mode: int = 0o644) -> None:
    path = facts.host.root / target.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(mode)


def test_euid(facts: Facts, answers: Answers) -> None:
    answers.add(["id", "-u"], "id", "root")
    assert facts.euid() == "0"
    assert facts.euid() == "0"
    assert answers.argvs() == [["id", "-u"]]


@pytest.mark.parametrize("case,held", [("none", frozenset()), ("one", frozenset({"kmod"}))])
def test_apt_holds(facts: Facts, answers: Answers, case: str, held: frozenset) -> None:
    answers.add(["apt-mark", "showhold"], "apt-mark", case)
    assert facts.apt_holds() == held
    assert answers.argvs() == [["apt-mark", "showhold"]]


@pytest.mark.parametrize(
    "case,loadable",
    [
        ("debian-kernel-vhost_vsock", True),
        ("debian-kernel-builtin-unix", True),
        ("debian-kernel-no-such-module", False),
        ("running-kernel-vhost_vsock", False),
    ],
)
def test_module_loadable_asks_modinfo(
    facts: Facts, answers: Answers, case: str, loadable: bool
) -> None:
    answers.add(["modinfo"], "modinfo", case)
    assert facts.module_loadable("vhost_vsock") is loadable
    assert facts.module_loadable("vhost_vsock") is loadable
    assert answers.argvs() == [["modinfo", "-F", "filename", "vhost_vsock"]]
    facts.invalidate()
    facts.module_loadable("vhost_vsock")
    assert len(answers.calls) == 2


@pytest.mark.parametrize("present", ["/sys/module/vhost_vsock/", "/dev/vhost-vsock"])
def test_module_loadable_without_modinfo(facts: Facts, answers: Answers, present: str) -> None:
    answers.add(["modinfo"], "modinfo", "running-kernel-vhost_vsock")
    if present.endswith("/"):
        (facts.host.root / present.lstrip("/")).mkdir(parents=True)
    else:
        put(facts, present)
    assert facts.module_loadable("vhost_vsock")
    assert answers.calls == []


def test_iptables_save(facts: Facts, answers: Answers) -> None:
    answers.add(["iptables-save"], "iptables", "nft-cni")
    assert facts.iptables_save() is None  # not on PATH
    assert answers.calls == []
    put(facts, "/usr/sbin/iptables-save", "#!/bin/sh\n", 0o755)
    facts.invalidate()
    dump = facts.iptables_save()
    assert dump is not None and dump.has_chains(("CNI-", "KUBE-"))
    assert dump.text == capture("iptables", "nft-cni")["stdout"]
    assert dump.tables["nat"][-1] == "CNI-abc"
    answers.add(["iptables-save"], "iptables", "legacy-empty")
    assert facts.iptables_save() is dump  # cached until invalidate()
    facts.invalidate()
    empty = facts.iptables_save()
    assert empty is not None and not empty.has_chains(("CNI-", "KUBE-"))
    answers.add(["iptables-save"], "containerd", "bookworm-missing")  # a failing command
    facts.invalidate()
    assert facts.iptables_save() is None


@pytest.mark.parametrize(
    "case,ok,version,kata_type",
    [
        ("bookworm-kata", True, 2, "io.containerd.kata.v2"),
        ("trixie-kata", True, 2, "io.containerd.kata.v2"),
        ("sid-kata", True, 3, None),  # 2.x moved the runtimes to io.containerd.cri.v1.runtime
        ("sid-missing", True, 3, None),
        ("bookworm-missing", False, 1, None),
        ("sid-broken", False, 1, None),
    ],
)
def test_containerd_config(
    facts: Facts, answers: Answers, case: str, ok: bool, version: int, kata_type: Optional[str]
) -> None:
    answers.add(["containerd"], "containerd", case)
    dump = facts.containerd_config("/etc/containerd/config.toml")
    assert (dump.ok, dump.version) == (ok, version)
    runtimes = ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes")
    assert dump.get(*runtimes, "kata", "runtime_type") == kata_type
    assert bool(dump.error) is not ok
    if not ok:
        assert dump.error in capture("containerd", case)["stderr"].replace("\n", " ")
    assert answers.calls == [
        (["containerd", "--config", "/etc/containerd/config.toml", "config", "dump"], None, 60)
    ]
    assert facts.containerd_config("/etc/containerd/config.toml") is dump


KUBECONFIG = "/etc/kubernetes/admin.conf"


def test_runtime_class(facts: Facts, answers: Answers) -> None:
    answers.add(["kubectl"], "kubectl", "local-object")
    assert facts.runtime_class(KUBECONFIG, "kata") is None  # no kubeconfig
    put(facts, KUBECONFIG, "kubeconfig\n", 0o600)
    facts.invalidate()
    assert facts.runtime_class(KUBECONFIG, "kata") is None  # no kubectl
    assert answers.calls == []
    put(facts, "/usr/bin/kubectl", "#!/bin/sh\n", 0o755)
    facts.invalidate()
    found = facts.runtime_class(KUBECONFIG, "kata")
    assert found is not None and found["spec"]["runtimeClassName"] == "kata"
    argv = ["kubectl", "--kubeconfig", KUBECONFIG, "get", "runtimeclass", "kata", "-o", "json"]
    assert answers.calls == [(argv, None, 60)]
    for case in ("runtimeclass-unreachable", "local-no-change"):
        answers.add(["kubectl"], "kubectl", case)
        facts.invalidate()
        assert facts.runtime_class(KUBECONFIG, "kata") is None


@pytest.mark.parametrize(
    "case,ok,error",
    [
        ("local-object", True, ""),
        ("local-no-change", False, "kubectl printed no object"),
        ("dry-run-unreachable", False, "error: error validating"),
        ("runtimeclass-unreachable", False, "The connection to the server"),
    ],
)
def test_server_dry_run(facts: Facts, answers: Answers, case: str, ok: bool, error: str) -> None:
    answers.add(["kubectl"], "kubectl", case)
    manifest = "apiVersion: v1\nkind: Pod\n"
    answer = facts.server_dry_run(KUBECONFIG, manifest)
    assert answer.ok is ok and (answer.obj is not None) is ok
    assert answer.error.startswith(error) or error in answer.error
    argv = ["kubectl", "--kubeconfig", KUBECONFIG, "apply", "--dry-run=server", "-o", "json"]
    assert answers.calls == [([*argv, "-f", "-"], manifest, 60)]
    facts.server_dry_run(KUBECONFIG, manifest)
    facts.server_dry_run(KUBECONFIG, manifest + "---\n")  # another manifest: asked again
    assert len(answers.calls) == 2
    facts.invalidate()
    facts.server_dry_run(KUBECONFIG, manifest)
    assert len(answers.calls) == 3


def test_runs(facts: Facts, answers: Answers) -> None:
    answers.add(["modinfo"], "modinfo", "debian-kernel-no-such-module")
    answers.add(["id"], "id", "root")
    assert facts.runs(("id", "-u")) == (True, "0")
    assert facts.runs(("id", "-u")) == (True, "0")
    assert facts.runs(("modinfo", "-F", "filename", "x"), timeout=5) == (
        False,
        "modinfo: ERROR: Module no_such_module_frakti not found.",
    )
    assert answers.calls == [
        (["id", "-u"], None, 30),
        (["modinfo", "-F", "filename", "x"], None, 5),
    ]


def test_units_when_systemctl_cannot_answer(facts: Facts, answers: Answers) -> None:
    answers.add(["systemctl"], "systemctl", "not-booted-with-systemd")
    units = facts.units(["containerd.service", "kubelet.service"])
    assert [u.load_state for u in units.values()] == ["not-found", "not-found"]
    assert not units["containerd.service"].exists and units["kubelet.service"].main_pid == 0


def test_units_by_id_and_alias_by_position(tmp_path: Path) -> None:
    # The layout of `systemctl show` (typed: no systemd as PID 1 where fixtures were made).
    answer = (
        "Id=ssh.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n"
        "MainPID=42\nFragmentPath=/lib/systemd/system/ssh.service\n\n"
        "Id=nope.service\nLoadState=not-found\nActiveState=inactive\nUnitFileState=\n"
        "MainPID=0\nFragmentPath=\n\n"
        "Id=ssh.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n"
        "MainPID=42\nFragmentPath=/lib/systemd/system/ssh.service\n"
    )

    def runner(argv: Sequence[str], *_: Any) -> CommandResult:
        return CommandResult(list(argv), 0, answer, "")

    facts = Facts(Host(root=tmp_path, runner=runner))
    units = facts.units(["ssh.service", "nope.service", "sshd.service"])
    assert units["sshd.service"].name == "sshd.service"
    assert units["sshd.service"].main_pid == 42 and units["sshd.service"].active
    assert units["ssh.service"].is_enabled
    assert not units["nope.service"].exists


def test_kvm_usable_and_free_disk(facts: Facts) -> None:
    put(facts, "/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vmx\n")
    assert not facts.kvm_usable()
    put(facts, "/dev/kvm", "", 0o666)
    facts.invalidate()
    assert facts.kvm_usable() is os.access(facts.host.root / "dev/kvm", os.R_OK | os.W_OK)
    assert facts.free_disk_gb("/var/lib/not/there/yet") > 0


# --- package managers, gpg and docker on their captures ------------------------------
def test_dpkg_query_held_but_not_installed_is_absent() -> None:
    c = capture("dpkg-query", "held-and-missing")
    states = {line.split("\t")[0]: line.split("\t")[1] for line in c["stdout"].splitlines()}
    assert states == {"iproute2": "ii ", "kmod": "hn "}  # what dpkg printed
    assert "no-such-package-frakti" in c["stderr"] and c["returncode"] == 1
    assert probes.parse_dpkg_query(c["stdout"]) == {"iproute2": "6.1.0-3"}


@pytest.mark.parametrize(
    "case,found",
    [
        ("held-and-missing", {"iproute2": "6.1.0-3", "kmod": None, "no-such-package-frakti": None}),
        ("after-unhold", {"iproute2": "6.1.0-3", "kmod": None, "no-such-package-frakti": None}),
        ("none-found", {"iproute2": None, "kmod": None, "no-such-package-frakti": None}),
    ],
)
def test_apt_installed_asks_dpkg_query(
    facts: Facts, answers: Answers, case: str, found: Dict[str, Optional[str]]
) -> None:
    from frakti_install.packages import Apt

    answers.add(["dpkg-query"], "dpkg-query", case)
    names = ("iproute2", "kmod", "no-such-package-frakti")
    assert Apt().installed(facts.host, names) == found
    # capture.sh gave the format's escapes (backslash-t), which dpkg-query expands
    captured = [
        a.replace("\\t", "\t").replace("\\n", "\n")
        for a in capture("dpkg-query", case)["command"]
    ]
    assert answers.argvs()[0][:3] == captured[:3]


def test_apt_missing_candidates_on_apt_cache_policy(facts: Facts, answers: Answers) -> None:
    from frakti_install.packages import Apt

    answers.add(["apt-cache", "policy"], "apt-cache", "policy")
    names = ["iproute2", "socat", "mail-transport-agent", "no-such-package-frakti"]
    # a virtual package has "Candidate: (none)"; an unknown name prints nothing at all
    assert Apt().missing_candidates(facts.host, names) == names[2:]
    assert answers.argvs() == [["apt-cache", "policy", *names]]


@pytest.mark.parametrize(
    "case,found",
    [
        ("installed-and-missing", {"socat": "1.7.4.1-6.el9", "conntrack-tools": None}),
        ("none-installed", {"socat": None, "conntrack-tools": None}),
    ],
)
def test_yum_installed_asks_rpm(
    facts: Facts, answers: Answers, case: str, found: Dict[str, Optional[str]]
) -> None:
    from frakti_install.packages import Yum

    answers.add(["rpm"], "rpm", case)
    assert Yum().installed(facts.host, ("socat", "conntrack-tools")) == found
    assert "is not installed" in capture("rpm", case)["stdout"]  # rpm says so on stdout


@pytest.mark.parametrize("case", ["one-key-subkeys", "two-keys", "debian-archive-keyring"])
def test_gpg_fingerprints_are_the_primary_keys_only(case: str) -> None:
    c = capture("gpg", case)
    lines = c["stdout"].splitlines()
    subkeys = {
        lines[i + 1].split(":")[9]
        for i, line in enumerate(lines)
        if line.startswith("sub:") and lines[i + 1].startswith("fpr:")
    }
    keys = probes.signing_keys(c["stdout"])
    primaries = [key.fingerprint for key in keys]
    assert subkeys and not subkeys & set(primaries)
    # every key has the subkeys gpg listed under it, each with its own capabilities
    assert sum(len(key.subkeys) for key in keys) == sum(1 for x in lines if x.startswith("sub:"))
    assert len(primaries) == sum(1 for line in lines if line.startswith("pub:"))


def test_gpg_not_a_key() -> None:
    c = capture("gpg", "not-a-key")
    assert c["returncode"] == 2 and "no valid OpenPGP data" in c["stderr"]
    assert probes.signing_keys(c["stdout"]) == []


def test_docker_cgroup_driver_without_a_daemon(facts: Facts, answers: Answers) -> None:
    answers.add(["docker", "info"], "docker", "info-no-daemon")
    put(facts, "/usr/bin/docker", "#!/bin/sh\n", 0o755)
    assert facts.docker_cgroup_driver() is None
    assert answers.argvs() == [capture("docker", "info-no-daemon")["command"]]
    assert probes.parse_docker_info_value(0, "systemd\n") == "systemd"
