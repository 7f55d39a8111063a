"""The cluster inventory (kind: Cluster), the Ansible inventory and playbook, run_cluster.

No SSH and no hosts here. Where ansible-playbook is installed (the [cluster]
extra), the playbook is also syntax-checked, and run for real against three
"hosts" that are this machine (Ansible's local connection), with a fake
frakti-install and bootstrap.py that record what they were asked to do.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import textwrap
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from frakti_install import cluster
from frakti_install.errors import Aborted, ConfigError, ExitCode

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "ab" * 32


def write(tmp_path: Path, text: str, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    path.write_text("not really a key\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    path = tmp_path / "frakti_install-0.1.0-py3-none-any.whl"
    path.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    return path


VALID = """\
    apiVersion: frakti-install/v1
    kind: Cluster
    metadata: {name: lab}
    spec:
      hosts:
        - role: master
          ssh: {address: 192.168.56.10, user: root, port: 22, keyPath: id_ed25519}
        - role: worker
          ssh: {address: 192.168.56.11, user: admin, port: 2222}
          nodeSubnet: 10.244.7.0/24
        - role: worker
          ssh: {address: node3.example}
          nodeSubnet: auto
      install:
        fromPath: frakti_install-0.1.0-py3-none-any.whl
        pipArgs: ["--no-index", "--find-links=/srv/wheels"]
      config:
        pod_cidr: 10.244.0.0/16
        mirrors: {kubernetes: "http://mirror.example/k8s"}
        checksums: {frakti: "%s"}
""" % ("f" * 64)


def valid(tmp_path: Path, key: Path, wheel: Path) -> Path:
    return write(tmp_path, VALID)


def mutate(tmp_path: Path, change: Any) -> Path:
    """VALID with change(data) applied (a function editing the parsed mapping)."""
    data = yaml.safe_load(textwrap.dedent(VALID))
    change(data)
    return write(tmp_path, yaml.safe_dump(data))


# --------------------------------------------------------------------------- loading


def test_valid_inventory(tmp_path: Path, key: Path, wheel: Path) -> None:
    inv = cluster.load_inventory(valid(tmp_path, key, wheel))
    assert inv.name == "lab"
    assert inv.master.ssh == cluster.SSHTarget("192.168.56.10", "root", 22, key)
    assert [h.name for h in inv.workers] == ["192.168.56.11", "node3.example"]
    assert inv.workers[0].ssh.user == "admin" and inv.workers[0].ssh.port == 2222
    assert inv.workers[0].node_subnet == "10.244.7.0/24"
    assert inv.workers[1].ssh == cluster.SSHTarget("node3.example", "root", 22, None)
    assert inv.workers[1].node_subnet == "auto"
    assert inv.install.from_path == wheel and inv.install.kind == "file"
    assert inv.install.pip_args == ("--no-index", "--find-links=/srv/wheels")
    assert inv.config["pod_cidr"] == "10.244.0.0/16"
    with pytest.raises(FrozenInstanceError):
        inv.name = "other"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        inv.master.ssh.port = 23  # type: ignore[misc]


def test_example_inventory_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519").write_text("key\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    inv = cluster.load_inventory(ROOT / "examples" / "cluster.yaml")
    assert inv.name == "lab"
    assert inv.master.ssh.key_path == tmp_path / ".ssh" / "id_ed25519"
    assert len(inv.workers) == 2
    assert inv.install.version == "0.1.0" and inv.install.kind == "index"
    assert inv.config["version_set"] == "1.12"


def test_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        apiVersion: frakti-install/v1
        kind: Cluster
        spec:
          hosts:
            - {role: master, ssh: {address: 10.0.0.1}}
          install: {version: 0.1.0}
    """)  # fmt: skip
    inv = cluster.load_inventory(path)
    assert inv.name == "cluster" and inv.workers == () and inv.config == {}
    assert inv.master == cluster.ClusterHost(
        "10.0.0.1", "master", cluster.SSHTarget("10.0.0.1"), "auto"
    )  # fmt: skip
    assert inv.path == path


def _set(*keys: Any, value: Any) -> Any:
    def change(data: Dict[str, Any]) -> None:
        target = data
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return change


def _delete(*keys: Any) -> Any:
    def change(data: Dict[str, Any]) -> None:
        target = data
        for k in keys[:-1]:
            target = target[k]
        del target[keys[-1]]

    return change


ERRORS = [
    ("api-version", _set("apiVersion", value="v1"), "apiVersion: must be frakti-install/v1"),
    ("kind", _set("kind", value="Node"), "kind: must be Cluster, not 'Node'"),
    ("top-level", _set("Spec", value={}), "top level: unknown field(s) Spec"),
    ("spec-key", _set("spec", "host", value=[]), "spec: unknown field(s) host"),
    ("name", _set("metadata", "name", value="my lab"), "metadata.name: 'my lab' is not a name"),
    ("no-hosts", _set("spec", "hosts", value=[]), "spec.hosts: must be a non-empty list"),
    ("no-master", _set("spec", "hosts", 0, "role", value="worker"),
     "exactly one host must have role: master (found none)"),
    ("two-masters", _set("spec", "hosts", 1, "role", value="master"),
     "exactly one host must have role: master (found 192.168.56.10, 192.168.56.11)"),
    ("role", _set("spec", "hosts", 1, "role", value="etcd"),
     "spec.hosts[1] (192.168.56.11).role: 'etcd' is not a role"),
    ("no-role", _delete("spec", "hosts", 2, "role"),
     "spec.hosts[2] (node3.example).role: None is not a role"),
    ("host-key", _set("spec", "hosts", 1, "name", value="w1"),
     "spec.hosts[1] (192.168.56.11): unknown field(s) name"),
    ("no-ssh", _delete("spec", "hosts", 1, "ssh"),
     "spec.hosts[1].ssh.address: must be a non-empty string, not None"),
    ("ssh-key", _set("spec", "hosts", 1, "ssh", "password", value="x"),
     "spec.hosts[1] (192.168.56.11).ssh: unknown field(s) password"),
    ("address", _set("spec", "hosts", 1, "ssh", "address", value="a b"),
     "ssh.address: 'a b' is not a host name or IP address"),
    ("duplicate", _set("spec", "hosts", 2, "ssh", "address", value="192.168.56.11"),
     "spec.hosts[2] (192.168.56.11).ssh.address: 192.168.56.11 is listed twice "
     "(also spec.hosts[1] (192.168.56.11))"),
    ("port-0", _set("spec", "hosts", 1, "ssh", "port", value=0),
     "spec.hosts[1] (192.168.56.11).ssh.port: 0 is not a TCP port (1-65535)"),
    ("port-high", _set("spec", "hosts", 1, "ssh", "port", value=65536),
     "ssh.port: 65536 is not a TCP port (1-65535)"),
    ("port-string", _set("spec", "hosts", 1, "ssh", "port", value="22"),
     "ssh.port: '22' is not a TCP port (1-65535)"),
    ("port-bool", _set("spec", "hosts", 1, "ssh", "port", value=True),
     "ssh.port: True is not a TCP port (1-65535)"),
    ("user", _set("spec", "hosts", 1, "ssh", "user", value=""),
     "spec.hosts[1] (192.168.56.11).ssh.user: must be a non-empty string"),
    ("key-path", _set("spec", "hosts", 0, "ssh", "keyPath", value="missing_key"),
     "spec.hosts[0] (192.168.56.10).ssh.keyPath: "),
    ("node-subnet-outside", _set("spec", "hosts", 1, "nodeSubnet", value="10.1.0.0/24"),
     "spec.hosts[1] (192.168.56.11).nodeSubnet: node_subnet: 10.1.0.0/24 is not inside pod_cidr"),
    ("node-subnet-invalid", _set("spec", "hosts", 1, "nodeSubnet", value="10.244.7.1/24"),
     "nodeSubnet: node_subnet: '10.244.7.1/24' is not an IPv4 network"),
    ("node-subnet-overlap", _set("spec", "hosts", 2, "nodeSubnet", value="10.244.7.0/25"),
     "spec.hosts[2] (node3.example).nodeSubnet: 10.244.7.0/25 overlaps 10.244.7.0/24 of "
     "spec.hosts[1] (192.168.56.11)"),
    ("config-unknown", _set("spec", "config", "pod_cdir", value="10.0.0.0/16"),
     "spec.config.pod_cdir: unknown setting"),
    ("config-token", _set("spec", "config", "join_token", value=TOKEN),
     "spec.config.join_token: not allowed here: the playbook creates a short-lived token"),
    ("config-node-subnet", _set("spec", "config", "node_subnet", value="10.244.1.0/24"),
     "spec.config.node_subnet: not allowed here: a pod subnet is per host"),
    ("config-value", _set("spec", "config", "pod_cidr", value="10.244.0.0/33"),
     "spec.config: pod_cidr: '10.244.0.0/33' is not an IPv4 network"),
    ("config-checksum", _set("spec", "config", "checksums", value={"frakti": "abc"}),
     "spec.config: checksums: the sha256 for frakti is not 64 hex digits: 'abc'"),
    ("config-versions", _set("spec", "config", "kubernetes_version", value="1.30.0"),
     "spec.config: "),
    ("config-mapping", _set("spec", "config", value=["pod_cidr"]),
     "spec.config: must be a mapping, not list"),
    ("install-none", _set("spec", "install", value={}),
     "spec.install: give exactly one source of frakti-install (found none)"),
    ("install-missing", _delete("spec", "install"),
     "spec.install: give exactly one source of frakti-install (found none)"),
    ("install-two", _set("spec", "install", "version", value="0.1.0"),
     "spec.install: give exactly one source of frakti-install (found fromPath, version)"),
    ("install-key", _set("spec", "install", "url", value="https://x"),
     "spec.install: unknown field(s) url"),
    ("install-path", _set("spec", "install", "fromPath", value="nowhere.whl"),
     "spec.install.fromPath: "),
    ("bundle-path", _set("spec", "install", value={"bundle": "b.tar.gz"}),
     "spec.install.bundle: "),
    ("version", _set("spec", "install", value={"version": "latest!"}),
     "spec.install.version: 'latest!' is not a version"),
    ("pip-args", _set("spec", "install", "pipArgs", value="--no-index"),
     "spec.install.pipArgs: must be a list of pip options"),
]  # fmt: skip


@pytest.mark.parametrize("change, message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_invalid_inventory(
    tmp_path: Path, key: Path, wheel: Path, change: Any, message: str
) -> None:
    path = mutate(tmp_path, change)
    with pytest.raises(ConfigError) as caught:
        cluster.load_inventory(path)
    assert str(caught.value).startswith(f"{path}: "), str(caught.value)
    assert message in str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG


def test_missing_files_are_named(tmp_path: Path, key: Path, wheel: Path) -> None:
    path = mutate(tmp_path, _set("spec", "hosts", 0, "ssh", "keyPath", value="~/no/such/key"))
    with pytest.raises(ConfigError, match=r"keyPath: /.*/no/such/key does not exist"):
        cluster.load_inventory(path)
    (tmp_path / "keydir").mkdir()
    path = mutate(tmp_path, _set("spec", "hosts", 0, "ssh", "keyPath", value="keydir"))
    with pytest.raises(ConfigError, match=r"keyPath: .*/keydir is not a file"):
        cluster.load_inventory(path)
    (tmp_path / "notsource").mkdir()
    path = mutate(tmp_path, _set("spec", "install", value={"fromPath": "notsource"}))
    with pytest.raises(ConfigError, match=r"fromPath: .*/notsource is not a Python source tree"):
        cluster.load_inventory(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("- a\n- b\n", "must be a mapping (kind: Cluster)"),
        ("apiVersion: [unclosed\n", "is not valid YAML"),
    ],
)
def test_unreadable_inventory(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cluster.load_inventory(write(tmp_path, text))
    with pytest.raises(ConfigError, match="cannot read the cluster inventory"):
        cluster.load_inventory(tmp_path / "nothing.yaml")


def test_relative_paths_are_relative_to_the_inventory(tmp_path: Path) -> None:
    sub = tmp_path / "site"
    sub.mkdir()
    (sub / "bundle.tar.gz").write_bytes(b"x")
    path = write(sub, """\
        apiVersion: frakti-install/v1
        kind: Cluster
        spec:
          hosts: [{role: master, ssh: {address: 10.0.0.1}}]
          install: {bundle: bundle.tar.gz}
    """)  # fmt: skip
    inv = cluster.load_inventory(path)
    assert inv.install.bundle == sub / "bundle.tar.gz" and inv.install.kind == "bundle"


# --------------------------------------------------------------------------- Ansible inventory


def test_render_ansible_inventory(tmp_path: Path, key: Path, wheel: Path) -> None:
    inv = cluster.load_inventory(valid(tmp_path, key, wheel))
    text = cluster.render_ansible_inventory(inv)
    assert text.startswith("# frakti-install cluster lab: generated from ")
    data = yaml.safe_load(text)
    groups = data["all"]["children"]
    assert list(groups) == ["master", "workers"]
    assert groups["master"]["hosts"] == {
        "192.168.56.10": {
            "ansible_host": "192.168.56.10",
            "ansible_user": "root",
            "ansible_port": 22,
            "ansible_ssh_private_key_file": str(key),
        }
    }
    assert groups["workers"]["hosts"] == {
        "192.168.56.11": {
            "ansible_host": "192.168.56.11",
            "ansible_user": "admin",
            "ansible_port": 2222,
            "frakti_node_subnet": "10.244.7.0/24",
        },
        "node3.example": {
            "ansible_host": "node3.example",
            "ansible_user": "root",
            "ansible_port": 22,
        },
    }


def test_render_without_workers(tmp_path: Path) -> None:
    inv = cluster.Inventory(
        name="one",
        hosts=(cluster.ClusterHost("10.0.0.1", "master", cluster.SSHTarget("10.0.0.1")),),
        install=cluster.InstallSource(version="0.1.0"),
    )
    data = yaml.safe_load(cluster.render_ansible_inventory(inv))
    assert data["all"]["children"]["workers"] == {"hosts": {}}


# --------------------------------------------------------------------------- the playbook


def playbook() -> List[Dict[str, Any]]:
    data = yaml.safe_load(cluster.PLAYBOOK.read_text())
    assert isinstance(data, list)
    return data


def task_names(play: Dict[str, Any]) -> List[str]:
    names = []
    for task in play["tasks"]:
        names += [t["name"] for t in task["block"]] if "block" in task else [task["name"]]
    return names


def flat_tasks(play: Dict[str, Any]) -> List[Dict[str, Any]]:
    tasks = []
    for task in play["tasks"]:
        tasks += task.get("block", [task])
    return tasks


INSTALL = [
    "Create the staging directory",
    "Copy bootstrap.py",
    "Copy the bundle or package",
    "Install or upgrade frakti-install (bootstrap.py)",
    "Create /etc/frakti-install",
    "Write this host's settings",
]


def test_playbook_plays_in_order() -> None:
    plays = playbook()
    assert [p["hosts"] for p in plays] == ["master", "workers", "master:workers"]
    master, workers, everyone = plays
    assert master["any_errors_fatal"] is True
    assert workers["strategy"] == "free" and "serial" not in workers
    assert task_names(master) == INSTALL + [
        "Install Kubernetes with frakti on the master (frakti-install allinone)",
        "Steps that changed (or, dry run, would change)",
        "Create the join line for the workers (holds a fresh, short-lived token)",
    ]
    assert task_names(workers) == INSTALL + [
        "Join the cluster (frakti-install node; the token goes on stdin)",
        "Stop if the join failed (its error, with the token masked)",
        "Steps that changed (or, dry run, would change)",
        "Routes to the other nodes' pod subnets (frakti-install routes)",
    ]
    assert task_names(everyone) == [
        "Routes to the other nodes' pod subnets (frakti-install routes)"
    ]  # fmt: skip


def test_playbook_keeps_the_token_secret() -> None:
    master, workers, _ = playbook()
    join_command = flat_tasks(master)[-1]
    assert "join-command" in join_command["ansible.builtin.command"]["argv"]
    assert join_command["no_log"] is True
    assert join_command["changed_when"] is False
    assert join_command["register"] == "frakti_join"
    node = next(t for t in flat_tasks(workers) if t["name"].startswith("Join the cluster"))
    assert node["no_log"] is True
    command = node["ansible.builtin.command"]
    assert "'node'" in command["argv"] and "'--token'" not in command["argv"]
    assert command["stdin"] == "{{ frakti_join_token }}"
    assert "FRAKTI_INSTALL_JOIN_TOKEN" in command["argv"]
    assert "hostvars[frakti_master].frakti_join.stdout" in workers["vars"]["frakti_join_words"]
    report = next(t for t in flat_tasks(workers) if t["name"].startswith("Stop if the join"))
    assert "replace(frakti_join_token" in report["ansible.builtin.fail"]["msg"]
    # nothing else holds the token
    for play in (master, workers):
        for task in flat_tasks(play):
            if task is not node and task is not report:
                assert "frakti_join_token" not in json.dumps(task), task["name"]


def test_playbook_commands_report_changes_from_json() -> None:
    commands = 0
    for play in playbook():
        for task in flat_tasks(play):
            if "ansible.builtin.command" not in task:
                continue
            commands += 1
            assert "changed_when" in task, task["name"]
            argv = json.dumps(task["ansible.builtin.command"]["argv"])
            if any(word in argv for word in ("allinone", "'node'", "routes")):
                assert "--json" in argv, task["name"]
                assert "from_json).changed" in task["changed_when"], task["name"]
    assert commands == 7  # bootstrap (in both plays), allinone, join-command, node, routes x2


def test_playbook_config_file_is_private() -> None:
    master = playbook()[0]
    settings = next(t for t in flat_tasks(master) if t["name"] == "Write this host's settings")
    assert settings["ansible.builtin.copy"]["dest"] == "{{ frakti_config_path }}"
    assert settings["ansible.builtin.copy"]["mode"] == "0600"
    staging = flat_tasks(master)[0]["ansible.builtin.file"]
    assert staging["mode"] == "0700"


# --------------------------------------------------------------------------- run_cluster


class FakeRunner:
    def __init__(self, returncode: int = 0) -> None:
        self.returncode = returncode
        self.calls: List[List[str]] = []
        self.files: Dict[str, Any] = {}

    def __call__(self, argv: List[str], **kwargs: Any) -> subprocess.CompletedProcess:
        self.calls.append(list(argv))
        self.kwargs = kwargs
        inventory, variables = Path(argv[argv.index("-i") + 1]), Path(argv[-1].lstrip("@"))
        self.workdir = inventory.parent
        self.files = {
            "workdir_mode": stat.S_IMODE(inventory.parent.stat().st_mode),
            "inventory_mode": stat.S_IMODE(inventory.stat().st_mode),
            "vars_mode": stat.S_IMODE(variables.stat().st_mode),
            "inventory": yaml.safe_load(inventory.read_text()),
            "vars": json.loads(variables.read_text()),
        }
        source = self.files["vars"]["frakti_source"]
        if source["local"].endswith("frakti-install-source.tar.gz"):
            with tarfile.open(source["local"]) as tar:
                self.files["packed"] = sorted(tar.getnames())
        return subprocess.CompletedProcess(argv, self.returncode)


@pytest.fixture
def fake_ansible(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(cluster, "ansible_playbook", lambda: "/opt/ansible/bin/ansible-playbook")
    return "/opt/ansible/bin/ansible-playbook"


def test_run_cluster_argv_and_files(
    tmp_path: Path, key: Path, wheel: Path, fake_ansible: str
) -> None:
    inv = cluster.load_inventory(valid(tmp_path, key, wheel))
    runner = FakeRunner()
    assert cluster.run_cluster(inv, dry_run=False, yes=True, runner=runner) == 0
    (argv,) = runner.calls
    inventory = runner.workdir / "inventory.yml"
    assert argv == [
        fake_ansible, "-i", str(inventory), str(cluster.PLAYBOOK),
        "-e", f"@{runner.workdir}/vars.json",
    ]  # fmt: skip
    assert Path(argv[3]).name == "cluster-playbook.yml"
    assert runner.kwargs["check"] is False
    assert runner.kwargs["env"]["ANSIBLE_RETRY_FILES_ENABLED"] == "False"
    assert runner.files["workdir_mode"] == 0o700
    assert runner.files["inventory_mode"] == 0o600 and runner.files["vars_mode"] == 0o600
    assert runner.files["inventory"] == yaml.safe_load(cluster.render_ansible_inventory(inv))
    variables = runner.files["vars"]
    assert variables["frakti_dry_run"] is False
    assert variables["frakti_source"] == {
        "kind": "file", "local": str(wheel), "name": wheel.name, "version": ""
    }  # fmt: skip
    assert variables["frakti_pip_args"] == ["--no-index", "--find-links=/srv/wheels"]
    assert variables["frakti_config"] == dict(inv.config)
    assert variables["frakti_config_path"] == "/etc/frakti-install/cluster.yaml"
    assert variables["frakti_command"] == "/usr/local/bin/frakti-install"
    assert Path(variables["frakti_bootstrap"]).name == "bootstrap.py"
    assert Path(variables["frakti_bootstrap"]).is_file()
    assert not runner.workdir.exists()  # removed afterwards


def test_run_cluster_dry_run_and_failures(
    tmp_path: Path, key: Path, wheel: Path, fake_ansible: str
) -> None:
    inv = cluster.load_inventory(valid(tmp_path, key, wheel))
    runner = FakeRunner()
    assert cluster.run_cluster(inv, dry_run=True, yes=False, runner=runner) == 0
    assert runner.files["vars"]["frakti_dry_run"] is True
    failing = FakeRunner(returncode=2)
    result = cluster.run_cluster(inv, dry_run=False, yes=True, runner=failing)
    assert result == ExitCode.COMMAND_FAILED
    assert not failing.workdir.exists()


def test_run_cluster_asks_first(tmp_path: Path, key: Path, wheel: Path, fake_ansible: str) -> None:
    inv = cluster.load_inventory(valid(tmp_path, key, wheel))
    runner = FakeRunner()
    with pytest.raises(Aborted, match="nothing was changed"):
        cluster.run_cluster(inv, dry_run=False, yes=False, runner=runner)
    questions: List[str] = []

    def no(text: str) -> bool:
        questions.append(text)
        return False

    with pytest.raises(Aborted):
        cluster.run_cluster(inv, dry_run=False, yes=False, runner=runner, confirm=no)
    assert runner.calls == []
    assert "master  root@192.168.56.10: allinone" in questions[0]
    assert "worker  admin@192.168.56.11: node" in questions[0]
    assert (
        cluster.run_cluster(inv, dry_run=False, yes=False, runner=runner, confirm=lambda t: True)
        == 0
    )
    assert len(runner.calls) == 1


def test_run_cluster_packs_a_source_tree(tmp_path: Path, fake_ansible: str) -> None:
    tree = tmp_path / "src-tree"
    (tree / "src" / "pkg").mkdir(parents=True)
    (tree / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tree / "src" / "pkg" / "__init__.py").write_text("")
    for junk in (".git", ".venv", "src/pkg/__pycache__", "src/x.egg-info"):
        (tree / junk).mkdir()
        (tree / junk / "file").write_text("junk")
    path = write(tmp_path, f"""\
        apiVersion: frakti-install/v1
        kind: Cluster
        spec:
          hosts: [{{role: master, ssh: {{address: 10.0.0.1}}}}]
          install: {{fromPath: {tree}}}
    """)  # fmt: skip
    inv = cluster.load_inventory(path)
    assert inv.install.kind == "tree"
    runner = FakeRunner()
    cluster.run_cluster(inv, dry_run=True, yes=True, runner=runner)
    source = runner.files["vars"]["frakti_source"]
    assert source["kind"] == "file" and source["name"] == "frakti-install-source.tar.gz"
    assert runner.files["packed"] == [
        "frakti-install-source/pyproject.toml", "frakti-install-source/src/pkg/__init__.py"
    ]  # fmt: skip


def test_run_cluster_without_ansible(
    tmp_path: Path, key: Path, wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = cluster.load_inventory(valid(tmp_path, key, wheel))
    monkeypatch.setattr(cluster, "ansible_playbook", lambda: None)
    runner = FakeRunner()
    with pytest.raises(ConfigError) as caught:
        cluster.run_cluster(inv, dry_run=True, yes=True, runner=runner)
    assert "ansible-playbook is not installed" in str(caught.value)
    assert "pip install 'frakti-install[cluster]'" in str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert runner.calls == []


def test_ansible_playbook_is_found_beside_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    (tmp_path / "bin").mkdir()
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    assert cluster.ansible_playbook() is None
    tool = tmp_path / "bin" / "ansible-playbook"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert cluster.ansible_playbook() == str(tool)


def test_find_bootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cluster.find_bootstrap() == (ROOT / "bootstrap.py").resolve()
    other = tmp_path / "bootstrap.py"
    other.write_text("")
    monkeypatch.setenv("FRAKTI_INSTALL_BOOTSTRAP", str(other))
    assert cluster.find_bootstrap() == other


def test_engine_imports_no_ui() -> None:
    code = (
        "import sys, frakti_install.cluster\n"
        "bad = [m for m in ('typer', 'rich', 'click') if m in sys.modules]\n"
        "sys.exit('imported: ' + ', '.join(bad) if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- with Ansible

needs_ansible = pytest.mark.skipif(
    cluster.ansible_playbook() is None,
    reason="ansible-playbook is not installed (pip install 'frakti-install[cluster]')",
)


@needs_ansible
def test_playbook_syntax_check(tmp_path: Path, key: Path, wheel: Path) -> None:
    inv = cluster.load_inventory(valid(tmp_path, key, wheel))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(cluster.render_ansible_inventory(inv))
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps(cluster.extra_vars(inv, dry_run=False, workdir=tmp_path)))
    argv = cluster.playbook_argv(str(cluster.ansible_playbook()), inventory, variables)
    proc = subprocess.run(
        [*argv, "--syntax-check"], capture_output=True, text=True, env=ansible_env(tmp_path)
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = subprocess.run(
        [*argv, "--list-tasks"], capture_output=True, text=True, env=ansible_env(tmp_path)
    )  # fmt: skip
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "play #1 (master): Install the master" in listed.stdout
    assert "play #2 (workers): Join the workers" in listed.stdout
    assert "play #3 (master:workers): Routes between all nodes" in listed.stdout


def ansible_env(tmp_path: Path, **extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        **extra,
    )  # fmt: skip
    env.pop("ANSIBLE_CONFIG", None)
    return env


FAKE_TOOL = """\
#!{python}
# A fake frakti-install: records each call, answers like the real one (--json).
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    token = os.environ.get("FRAKTI_INSTALL_JOIN_TOKEN")
    log.write(json.dumps({{"argv": args, "token": token}}) + "\\n")
changed = os.environ.get("FAKE_CHANGED") == "1"
if args[0] == "join-command":
    print("FRAKTI_INSTALL_JOIN_TOKEN={token} frakti-install node --yes --join 10.99.0.10:6443 "
          "--discovery-token-ca-cert-hash {ca_hash}")
elif args[0] == "node" and os.environ.get("FAKE_JOIN_FAILS") == "1":
    token = os.environ["FRAKTI_INSTALL_JOIN_TOKEN"]
    sys.stderr.write("command failed: kubeadm join --token=%s\\n" % token)
    sys.exit(6)
else:
    print(json.dumps({{"ok": True, "changed": changed, "dry_run": "--dry-run" in args,
                      "steps": [{{"name": "kernel", "status": "change" if changed else "ok",
                                  "detail": "", "changes": ["load br_netfilter"]}}]}}))
"""
FAKE_BOOTSTRAP = """\
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"bootstrap": sys.argv[1:]}) + "\\n")
if os.environ.get("FAKE_CHANGED") == "1":
    sys.stderr.write("Successfully installed frakti-install-0.1.0\\n")
"""


@needs_ansible
def test_playbook_runs_in_order_and_hides_the_token(
    tmp_path: Path, wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three "hosts" on this machine (local connection) and a fake frakti-install."""
    tool = tmp_path / "fake-frakti-install"
    tool.write_text(FAKE_TOOL.format(python=sys.executable, token=TOKEN, ca_hash=CA_HASH))
    tool.chmod(0o755)
    bootstrap = tmp_path / "bootstrap.py"
    bootstrap.write_text(FAKE_BOOTSTRAP)
    log = tmp_path / "calls.jsonl"
    path = write(tmp_path, """\
        apiVersion: frakti-install/v1
        kind: Cluster
        metadata: {name: local}
        spec:
          hosts:
            - {role: master, ssh: {address: m}}
            - {role: worker, ssh: {address: w1}, nodeSubnet: 10.244.9.0/24}
            - {role: worker, ssh: {address: w2}}
          install: {fromPath: frakti_install-0.1.0-py3-none-any.whl, pipArgs: [--no-index]}
          config: {pod_cidr: 10.244.0.0/16}
    """)  # fmt: skip
    inv = cluster.load_inventory(path)
    monkeypatch.setattr(
        cluster, "REMOTE_DIR", str(tmp_path / "hosts/{{ inventory_hostname }}/stage")
    )
    monkeypatch.setattr(
        cluster, "REMOTE_CONFIG", str(tmp_path / "hosts/{{ inventory_hostname }}/etc/cluster.yaml")
    )  # fmt: skip
    monkeypatch.setattr(cluster, "REMOTE_COMMAND", str(tool))
    monkeypatch.setenv("FRAKTI_INSTALL_BOOTSTRAP", str(bootstrap))

    def play(changed: bool, dry_run: bool = False, fails: bool = False) -> Any:
        log.write_text("")
        env = ansible_env(
            tmp_path, ANSIBLE_TRANSPORT="local", ANSIBLE_PYTHON_INTERPRETER=sys.executable,
            FAKE_LOG=str(log), FAKE_CHANGED="1" if changed else "0",
            FAKE_JOIN_FAILS="1" if fails else "0",
        )  # fmt: skip
        outputs: List[str] = []

        def runner(argv: List[str], **kwargs: Any) -> subprocess.CompletedProcess:
            proc = subprocess.run(argv, env=kwargs["env"], capture_output=True, text=True)
            outputs.append(proc.stdout + proc.stderr)
            return proc

        rc = cluster.run_cluster(inv, dry_run=dry_run, yes=True, runner=runner, env=env)
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return rc, outputs[0], calls

    rc, output, calls = play(changed=True)
    assert rc == 0, output
    assert TOKEN not in output
    tools = [c for c in calls if "argv" in c]
    commands = [c["argv"][0] for c in tools]
    # master first (allinone, then the join line), the workers, then routes everywhere
    assert commands[:2] == ["allinone", "join-command"]
    assert commands[2:].count("node") == 2 and "allinone" not in commands[2:]
    assert commands.count("routes") == 5 and commands[-3:] == ["routes"] * 3
    allinone = tools[0]["argv"]
    assert allinone[:3] == ["allinone", "--json", "-c"] and "--yes" in allinone
    assert allinone[3].endswith("hosts/m/etc/cluster.yaml")
    for node in (c for c in tools if c["argv"][0] == "node"):
        assert node["token"] == TOKEN  # on stdin -> environment, never in argv
        assert TOKEN not in node["argv"]
        assert node["argv"][node["argv"].index("--join") + 1] == "10.99.0.10:6443"
        assert CA_HASH in node["argv"] and "--yes" in node["argv"]
    assert all(c["token"] is None for c in tools if c["argv"][0] != "node")
    bootstraps = [c["bootstrap"] for c in calls if "bootstrap" in c]
    assert len(bootstraps) == 3
    assert bootstraps[0] == [
        "--from-path",
        f"{tmp_path}/hosts/m/stage/{wheel.name}",
        "--pip-arg=--no-index",
    ]
    w1 = yaml.safe_load((tmp_path / "hosts/w1/etc/cluster.yaml").read_text())
    assert w1 == {"pod_cidr": "10.244.0.0/16", "node_subnet": "10.244.9.0/24"}
    assert yaml.safe_load((tmp_path / "hosts/w2/etc/cluster.yaml").read_text()) == {
        "pod_cidr": "10.244.0.0/16"
    }  # fmt: skip
    assert stat.S_IMODE((tmp_path / "hosts/w2/etc/cluster.yaml").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "hosts/m/stage").stat().st_mode) == 0o700
    assert "changed=" in output and "failed=0" in output

    # a dry run: plans only, placeholder join, no join line, no routes
    rc, output, calls = play(changed=True, dry_run=True)
    assert rc == 0, output
    commands = [c["argv"][0] for c in calls if "argv" in c]
    assert sorted(commands) == ["allinone", "node", "node"]
    assert all("--dry-run" in c["argv"] and "--yes" not in c["argv"] for c in calls if "argv" in c)
    node = next(c for c in calls if c.get("argv", [""])[0] == "node")
    assert node["argv"][node["argv"].index("--join") + 1] == "m:6443"

    # nothing left to do on the master (Ansible says so), and a join that fails:
    # its error is shown, the token is not
    rc, output, calls = play(changed=False, fails=True)
    assert rc == ExitCode.COMMAND_FAILED
    recap = output[output.index("PLAY RECAP") :]
    assert re.search(r"\bm\s+: ok=\d+\s+changed=0\s", recap), recap
    assert (
        "frakti-install node failed (exit 6): command failed: kubeadm join --token=<secret>"
        in output
    )
    assert TOKEN not in output
