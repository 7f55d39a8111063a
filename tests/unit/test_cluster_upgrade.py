"""`frakti-install cluster -f inventory.yaml upgrade`: the upgrade playbook's
shape (master first, then the workers one at a time, stopping at the first
failure), and a real ansible-playbook run over four local "hosts" with a fake
frakti-install: the order, the master's kubeconfig lent to each worker for its
drain and taken back, the stop at a failing worker, a recap per node."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from typer.testing import CliRunner

from frakti_install import cluster
from frakti_install.cli import app
from frakti_install.errors import ExitCode
from tests.unit.test_cluster_inventory import (
    FAKE_BOOTSTRAP,
    FakeRunner,
    ansible_env,
    flat_tasks,
    key,  # noqa: F401 (a fixture)
    needs_ansible,
    valid,
    wheel,  # noqa: F401 (a fixture)
    write,
)


def playbook() -> List[Dict[str, Any]]:
    data = yaml.safe_load(cluster.PLAYBOOKS["upgrade"].read_text())
    assert isinstance(data, list)
    return data


def test_upgrade_playbook_master_first_then_workers_one_at_a_time() -> None:
    master, workers = playbook()
    assert (master["hosts"], workers["hosts"]) == ("master", "workers")
    for play in (master, workers):
        assert play["any_errors_fatal"] is True and play["max_fail_percentage"] == 0
    assert workers["serial"] == 1 and "strategy" not in workers
    upgrade = next(t for t in flat_tasks(master) if t["name"].startswith("Upgrade the master"))
    argv = upgrade["ansible.builtin.command"]["argv"]
    assert "'upgrade'" in argv and "frakti_upgrade_args" in argv and "--kubeconfig" not in argv
    lent = next(t for t in workers["tasks"] if "block" in t and "always" in t)
    read, copy, run = lent["block"]
    assert read["delegate_to"] == "{{ frakti_master }}" and read["no_log"] is True
    assert copy["ansible.builtin.copy"]["mode"] == "0600" and copy["no_log"] is True
    assert "'--kubeconfig', frakti_lent_kubeconfig" in run["ansible.builtin.command"]["argv"]
    assert "frakti_upgrade_args" not in run["ansible.builtin.command"]["argv"]  # follows master
    (back,) = lent["always"]
    assert back["ansible.builtin.file"]["state"] == "absent"


def test_run_cluster_upgrade_picks_its_playbook_and_passes_the_masters_options(
    tmp_path: Path, key: Path, wheel: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setattr(cluster, "ansible_playbook", lambda: "/opt/ansible/bin/ansible-playbook")
    inv = cluster.load_inventory(valid(tmp_path, key, wheel))
    runner = FakeRunner()
    args = ["--kubernetes-version", "v1.36"]
    assert cluster.run_cluster(inv, dry_run=False, yes=True, runner=runner, action="upgrade",
                               upgrade_args=args) == 0  # fmt: skip
    (argv,) = runner.calls
    assert Path(argv[3]).name == "cluster-upgrade-playbook.yml"
    assert runner.files["vars"]["frakti_upgrade_args"] == args
    assert runner.files["vars"]["frakti_admin_conf"] == "/etc/kubernetes/admin.conf"
    text = cluster.describe(inv, "upgrade")
    assert "one node at a time" in text and "uncordoned" in text


def test_cluster_cli_refuses_an_unknown_action_and_install_with_versions(tmp_path: Path) -> None:
    path = tmp_path / "none.yaml"
    result = CliRunner().invoke(app, ["cluster", "-f", str(path), "downgrade"])
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert "unknown cluster action 'downgrade'" in result.output
    result = CliRunner().invoke(app, ["cluster", "-f", str(path), "--kubernetes-version", "v1.36"])
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert "upgrade's options" in result.output


KATA_ARGS = ["--kata-version", "3.32.0", "--checksum", "kata=" + "ab" * 32]


def test_cluster_cli_gives_kubernetes_to_the_master_and_kata_to_every_node(
    tmp_path: Path, key: Path, wheel: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    seen: Dict[str, Any] = {}

    def run_cluster(inv: Any, **options: Any) -> int:
        seen.update(options)
        return 0

    monkeypatch.setattr(cluster, "run_cluster", run_cluster)
    path = valid(tmp_path, key, wheel)
    argv = ["cluster", "-f", str(path), "upgrade", "--yes", "--kubernetes-version", "v1.36",
            "--kata-version", "3.32.0", "--checksum", "kata=" + "ab" * 32]  # fmt: skip
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert seen["upgrade_args"] == ["--kubernetes-version", "v1.36", *KATA_ARGS]
    assert seen["worker_upgrade_args"] == KATA_ARGS
    seen.clear()
    result = CliRunner().invoke(app, [*argv[:5], "--checksum", "kata"])
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert "kata" in result.output and not seen  # refused before Ansible runs
    result = CliRunner().invoke(app, [*argv[:5], "--checksum", "kata=zz"])
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert "not 64 hex digits" in result.output and not seen


FAKE_TOOL = """\
#!{python}
# A fake frakti-install: records each call and the lent kubeconfig's content then.
import json, os, sys
args = sys.argv[1:]
lent = args[args.index("--kubeconfig") + 1] if "--kubeconfig" in args else None
seen = open(lent).read() if lent and os.path.exists(lent) else None
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "lent": lent, "seen": seen}}) + "\\n")
fail = os.environ.get("FAKE_FAIL_AT")
if args[0] == "upgrade" and fail and lent and "/hosts/%s/" % fail in lent:
    print(json.dumps({{"ok": False, "error": "drain of %s timed out" % fail}}))
    sys.exit(6)
print(json.dumps({{"ok": True, "changed": True, "steps": [
    {{"name": "kubeadm-upgrade", "status": "change", "detail": "", "changes": ["x"]}}]}}))
"""


@needs_ansible
def test_upgrade_playbook_runs_master_then_each_worker_and_stops_at_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = tmp_path / "fake-frakti-install"
    tool.write_text(FAKE_TOOL.format(python=sys.executable))
    tool.chmod(0o755)
    bootstrap = tmp_path / "bootstrap.py"
    bootstrap.write_text(FAKE_BOOTSTRAP)
    (tmp_path / "frakti_install-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    admin = tmp_path / "admin.conf"
    admin.write_text("apiVersion: v1 # SECRET-ADMIN-CREDENTIALS\n")
    log = tmp_path / "calls.jsonl"
    path = write(tmp_path, """\
        apiVersion: frakti-install/v1
        kind: Cluster
        metadata: {name: local}
        spec:
          hosts:
            - {role: master, ssh: {address: m}}
            - {role: worker, ssh: {address: w1}}
            - {role: worker, ssh: {address: w2}}
            - {role: worker, ssh: {address: w3}}
          install: {fromPath: frakti_install-0.1.0-py3-none-any.whl, pipArgs: [--no-index]}
          config: {runtime: kata}
    """)  # fmt: skip
    inv = cluster.load_inventory(path)
    stage = str(tmp_path / "hosts/{{ inventory_hostname }}/stage")
    monkeypatch.setattr(cluster, "REMOTE_DIR", stage)
    monkeypatch.setattr(
        cluster, "REMOTE_CONFIG", str(tmp_path / "hosts/{{ inventory_hostname }}/etc/cluster.yaml")
    )  # fmt: skip
    monkeypatch.setattr(cluster, "REMOTE_COMMAND", str(tool))
    monkeypatch.setattr(cluster, "ADMIN_CONF", str(admin))
    monkeypatch.setenv("FRAKTI_INSTALL_BOOTSTRAP", str(bootstrap))

    def play(fail_at: str = "") -> Any:
        log.write_text("")
        env = ansible_env(
            tmp_path, ANSIBLE_TRANSPORT="local", ANSIBLE_PYTHON_INTERPRETER=sys.executable,
            FAKE_LOG=str(log), FAKE_FAIL_AT=fail_at, FAKE_CHANGED="1",
        )  # fmt: skip
        outputs: List[str] = []

        def runner(argv: List[str], **kwargs: Any) -> subprocess.CompletedProcess:
            proc = subprocess.run(argv, env=kwargs["env"], capture_output=True, text=True)
            outputs.append(proc.stdout + proc.stderr)
            return proc

        rc = cluster.run_cluster(inv, dry_run=False, yes=True, runner=runner, env=env,
                                 action="upgrade",
                                 upgrade_args=["--kubernetes-version", "v1.36", *KATA_ARGS],
                                 worker_upgrade_args=KATA_ARGS)
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return rc, outputs[0], [c for c in calls if "argv" in c]  # fmt: skip

    def host_of(call: Dict[str, Any]) -> str:
        return call["lent"].split("/hosts/")[1].split("/")[0] if call["lent"] else "m"

    rc, output, calls = play()
    assert rc == 0, output
    assert [host_of(c) for c in calls] == ["m", "w1", "w2", "w3"]
    master = calls[0]["argv"]
    assert master == ["upgrade", "--json", "--kubernetes-version", "v1.36", *KATA_ARGS, "--yes"]
    for call in calls[1:]:
        assert call["argv"][:3] == ["upgrade", "--json", "--kubeconfig"]
        assert "--kubernetes-version" not in call["argv"]  # a worker follows its master
        assert call["argv"][4:] == [*KATA_ARGS, "--yes"]  # but Kata is each node's own
        assert call["seen"] == "apiVersion: v1 # SECRET-ADMIN-CREDENTIALS\n"
    for worker in ("w1", "w2", "w3"):
        lent = tmp_path / f"hosts/{worker}/stage/admin.conf"
        assert not lent.exists(), f"{worker} keeps the master's kubeconfig"
    assert "SECRET-ADMIN-CREDENTIALS" not in output  # no_log
    recap = output[output.index("PLAY RECAP"):]
    for host in ("m", "w1", "w2", "w3"):
        assert re.search(rf"^{host}\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0",
                         recap, re.M), recap  # fmt: skip

    rc, output, calls = play(fail_at="w2")
    assert rc == ExitCode.COMMAND_FAILED
    assert [host_of(c) for c in calls] == ["m", "w1", "w2"]  # w3 is never touched
    assert not (tmp_path / "hosts/w2/stage/admin.conf").exists()  # taken back after the failure
    assert "drain of w2 timed out" in output
    recap = output[output.index("PLAY RECAP"):]
    assert re.search(r"^w2\s+: .*failed=1", recap, re.M), recap
    assert stat.S_IMODE((tmp_path / "hosts/w3/stage").stat().st_mode) == 0o700
