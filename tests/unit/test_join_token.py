"""The join token stays off every command line (issue 16 point 6): kubeadm
reads it from a 0600 --config file that is gone afterwards; `node` takes it
from a file or the environment; the line we print puts it in the environment.
And the clean-up reset after an unfinished init or join names the runtime's
CRI socket (issue 12 point 6)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from frakti_install import joining, plans, session
from frakti_install.errors import CommandFailed, ConfigError, ExitCode
from frakti_install.steps.kubeadm_config import api_version
from frakti_install.steps.kubeadm_init import KubeadmInitStep
from tests.unit.simhost import SimCluster, SimMachine, frakti, given_checksums, kata
from tests.unit.simkata import KataSimMachine, kata_checksums
from tests.unit.test_cli import invoke

CA_HASH = "sha256:" + "ab" * 32
STATE = "/var/lib/frakti-install"


def run(m, steps, **settings):
    report = session.execute(steps, m.context(m.settings(**settings)), dry_run=False)
    session.raise_for(report)
    return report


def on_argv(m, secret: str):
    return [argv for argv in m.runner.calls if secret in " ".join(argv)]


@pytest.fixture
def joined(tmp_path):
    """A frakti master and a worker that joined it with a token join-command made."""
    shared = SimCluster()
    master = SimMachine(tmp_path / "m", "debian", "12", hostname="m", ip="10.0.0.1", cluster=shared)
    run(master, plans.allinone(frakti()))
    line = joining.create_join_line(master.context())
    worker = SimMachine(tmp_path / "w", "debian", "12", hostname="w", ip="10.0.0.2", cluster=shared)
    join = dict(join_endpoint=line.endpoint, join_token=line.token, join_ca_hash=line.ca_hash)
    run(worker, plans.node(frakti()), **join)
    return master, worker, line


# --- kubeadm reads the token from its config file ------------------------------
def test_init_token_reaches_kubeadm_through_a_0600_file_that_is_gone_afterwards(joined):
    master, _, _ = joined
    [(path, mode, text)] = [c for c in master.runner.kubeadm_configs if "init" in c[0]]
    assert path == f"{STATE}/kubeadm-init.yaml" and mode == 0o600
    assert not master.p(path).exists()
    init, cluster = yaml.safe_load_all(text)
    assert init["apiVersion"] == cluster["apiVersion"] == "kubeadm.k8s.io/v1alpha3"
    assert cluster["networking"] == {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12"}
    assert init["nodeRegistration"] == {"name": "m", "criSocket": "/var/run/frakti.sock"}
    token = init["bootstrapTokens"][0]["token"]
    assert token in master.state.cluster.tokens  # kubeadm created the cluster with it
    assert not on_argv(master, token)
    init_argv = next(argv for argv in master.runner.calls if argv[:2] == ["kubeadm", "init"])
    assert init_argv == ["kubeadm", "init", f"--config={STATE}/kubeadm-init.yaml"]


def test_join_token_reaches_kubeadm_join_through_a_0600_file(joined):
    _, worker, line = joined
    [(path, mode, text)] = worker.runner.kubeadm_configs
    assert path == f"{STATE}/kubeadm-join.yaml" and mode == 0o600
    assert not worker.p(path).exists()
    join = yaml.safe_load(text)
    assert join["apiVersion"] == "kubeadm.k8s.io/v1alpha3" and join["kind"] == "JoinConfiguration"
    assert join["token"] == line.token and join["discoveryTokenAPIServers"] == ["10.0.0.1:6443"]
    assert join["discoveryTokenCACertHashes"] == [line.ca_hash]
    assert not on_argv(worker, line.token)
    journal = worker.p(f"{STATE}/journal.jsonl").read_text()
    assert line.token not in journal
    files = [json.loads(e) for e in journal.splitlines() if '"event": "file"' in e]
    assert files and not [e for e in files if "kubeadm-join" in e["path"]]  # not reset's
    backups = worker.p(f"{STATE}/backups")
    assert not [p for p in backups.rglob("*") if p.is_file() and line.token in p.read_text()]


def test_join_command_token_is_made_by_kubeadm_and_not_logged(joined, caplog):
    master, _, _ = joined
    with caplog.at_level("DEBUG", logger="frakti_install"):
        line = joining.create_join_line(master.context())
    assert line.token in master.state.cluster.tokens
    assert line.token not in caplog.text and "<stdout withheld" in caplog.text
    assert not on_argv(master, line.token)


def test_the_printed_join_line_puts_the_token_in_the_environment_only():
    line = joining.JoinLine("10.0.0.1:6443", "abcdef.0123456789abcdef", CA_HASH, "kata")
    words = line.command().split()
    assert words[0] == "FRAKTI_INSTALL_JOIN_TOKEN=abcdef.0123456789abcdef"
    assert words[1:3] == ["frakti-install", "node"] and "--token" not in words
    assert "abcdef.0123456789abcdef" not in " ".join(words[1:])
    assert "abcdef.0123456789abcdef" not in repr(line)


def test_a_failed_init_leaves_no_config_file(machine):
    m = machine()
    ctx = m.context()
    init = KubeadmInitStep().init(ctx)
    with pytest.raises(CommandFailed) as failed:  # no frakti socket: kubeadm refuses
        init.apply(ctx)
    assert "container runtime is not running" in failed.value.output
    assert m.runner.kubeadm_configs and not m.p(init.path).exists()


def test_a_killed_runs_config_file_is_removed_by_the_next_run(machine):
    m = machine()
    run(m, plans.allinone(frakti()))
    m.runner.write(f"{STATE}/kubeadm-init.yaml", "token: left behind\n", 0o600)
    report = run(m, plans.allinone(frakti()))
    init = next(r for r in report.steps if r.name == "kubeadm-init")
    assert init.changes == [
        f"remove {STATE}/kubeadm-init.yaml (a killed run's kubeadm config; it holds a token)"
    ]
    assert not m.p(f"{STATE}/kubeadm-init.yaml").exists()


def test_kata_master_and_worker_use_the_schema_of_kubeadm_1_31(tmp_path):
    shared = SimCluster()
    master = KataSimMachine(tmp_path / "m", "debian", "12", hostname="m", cluster=shared)
    run(master, plans.allinone(kata()), runtime="kata", checksums=kata_checksums())
    line = joining.create_join_line(master.context(master.settings(runtime="kata")))
    worker = KataSimMachine(
        tmp_path / "w", "debian", "12", hostname="w", ip="10.0.0.2", cluster=shared
    )
    run(
        worker, plans.node(kata()), runtime="kata", checksums=kata_checksums(),
        join_endpoint=line.endpoint, join_token=line.token, join_ca_hash=line.ca_hash,
    )  # fmt: skip
    init = yaml.safe_load_all(master.runner.kubeadm_configs[0][2])
    assert {doc["apiVersion"] for doc in init} == {"kubeadm.k8s.io/v1beta4"}
    join = yaml.safe_load(worker.runner.kubeadm_configs[0][2])
    assert join["discovery"]["bootstrapToken"] == {
        "token": line.token, "apiServerEndpoint": line.endpoint, "caCertHashes": [line.ca_hash],
    }  # fmt: skip
    assert join["nodeRegistration"]["criSocket"] == "unix:///run/containerd/containerd.sock"
    assert not on_argv(worker, line.token) and not on_argv(master, line.token)


@pytest.mark.parametrize(
    ("kubernetes", "schema"),
    [("v1.12.10", "v1alpha3"), ("v1.24.17", "v1beta3"), ("v1.30.5", "v1beta3"),
     ("v1.31.13", "v1beta4"), ("v1.36.0", "v1beta4")],
)  # fmt: skip
def test_each_release_gets_the_schema_its_kubeadm_reads(kubernetes, schema):
    assert api_version(kubernetes) == f"kubeadm.k8s.io/{schema}"


def test_a_release_without_a_known_schema_is_refused():
    with pytest.raises(ConfigError, match="which kubeadm config schema Kubernetes v1.16.0"):
        api_version("v1.16.0")


# --- the stand-in kubeadm refuses what the real one refuses ----------------------
def _config(m, text: str) -> str:
    m.runner.write("/tmp/k.yaml", text, 0o600)
    return "--config=/tmp/k.yaml"


INIT_V1BETA3 = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\n"
INIT_V1ALPHA3 = (
    "apiVersion: kubeadm.k8s.io/v1alpha3\nkind: InitConfiguration\n"
    "nodeRegistration:\n  criSocket: /var/run/frakti.sock\n"
)


def test_kubeadm_1_12_refuses_a_schema_it_does_not_know(machine):
    m = machine()
    result = m.runner(["kubeadm", "init", _config(m, INIT_V1BETA3)], None, None, None)
    assert not result.ok
    assert 'no kind "InitConfiguration" is registered for version "kubeadm.k8s.io/v1beta3"' in (
        result.stderr
    )


def test_kubeadm_1_31_refuses_v1alpha3(tmp_path):
    m = KataSimMachine(tmp_path / "k", "debian", "12")
    result = m.runner(["kubeadm", "init", _config(m, INIT_V1ALPHA3)], None, None, None)
    assert not result.ok and "kubeadm.k8s.io/v1alpha3" in result.stderr


@pytest.mark.parametrize(
    ("flag", "refused"),
    [("--pod-network-cidr=10.244.0.0/16", True), ("--token=abcdef.0123456789abcdef", True),
     ("--cri-socket=/var/run/frakti.sock", True), ("--node-name=x", True),
     ("--ignore-preflight-errors=all", False), ("--skip-token-print", False)],
)  # fmt: skip
def test_kubeadm_1_12_refuses_config_mixed_with_most_flags(machine, flag, refused):
    m = machine()
    result = m.runner(["kubeadm", "init", _config(m, INIT_V1ALPHA3), flag], None, None, None)
    mixed = "can not mix '--config' with arguments" in result.stderr
    assert mixed is refused, result.stderr


def test_kubeadm_1_31_lets_node_name_stand_beside_config(tmp_path):
    m = KataSimMachine(tmp_path / "k", "debian", "12")
    text = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n"
    result = m.runner(["kubeadm", "init", _config(m, text), "--node-name=x"], None, None, None)
    assert "can not mix" not in result.stderr
    result = m.runner(["kubeadm", "init", _config(m, text), "--cri-socket=x"], None, None, None)
    assert "can not mix '--config' with arguments [cri-socket]" in result.stderr


# --- the clean-up reset names the runtime's socket (issue 12 point 6) -------------
def test_reset_after_an_unfinished_init_names_the_runtime_socket(machine):
    m = machine()
    run(m, plans.allinone(frakti()))
    m.p("/etc/kubernetes/admin.conf").unlink()  # what a killed kubeadm init leaves
    m.state.cluster.nodes.clear()
    m.runner.calls.clear()
    run(m, plans.allinone(frakti()))
    [reset] = [argv for argv in m.runner.calls if argv[:2] == ["kubeadm", "reset"]]
    # kubeadm 1.12 takes dockershim's socket when none is given: hyper's pods would stay
    assert reset == ["kubeadm", "reset", "-f", "--cri-socket=/var/run/frakti.sock"]


def test_reset_after_an_unfinished_join_names_the_runtime_socket(joined):
    _, worker, line = joined
    worker.p("/etc/kubernetes/kubelet.conf").unlink()  # killed between bootstrap and finish
    worker.runner.write("/etc/kubernetes/bootstrap-kubelet.conf", "x\n")
    worker.runner.calls.clear()
    run(
        worker, plans.node(frakti()),
        join_endpoint=line.endpoint, join_token=line.token, join_ca_hash=line.ca_hash,
    )  # fmt: skip
    [reset] = [argv for argv in worker.runner.calls if argv[:2] == ["kubeadm", "reset"]]
    assert reset == ["kubeadm", "reset", "-f", "--cri-socket=/var/run/frakti.sock"]


# --- frakti-install node: the token from a file or the environment ---------------
@pytest.fixture
def sim(tmp_path, monkeypatch):
    """The CLI pointed at a simulated Debian 12 host: (machine, config path)."""

    def use():
        m = SimMachine(tmp_path / "root", "debian", "12")
        monkeypatch.setattr(session, "new_context", lambda settings, **_: m.context(settings))
        config = tmp_path / "frakti.yaml"
        settings = {"checksums": given_checksums("debian"), "lock_wait": 0}
        config.write_text(yaml.safe_dump({**settings, "log_file": str(tmp_path / "log")}))
        return m, str(config)

    return use


def _node(config: str, *extra: str, env=None):
    return invoke(
        "node", "--dry-run", "-c", config, "--join", "10.0.0.1:6443",
        "--discovery-token-ca-cert-hash", CA_HASH, *extra, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_token_file_others_can_read_is_refused(sim, tmp_path, mode):
    m, config = sim()
    token_file = tmp_path / "token"
    token_file.write_text("abcdef.0123456789abcdef\n")
    os.chmod(token_file, mode)
    result = _node(config, "--token-file", str(token_file))
    assert result.exit_code == ExitCode.CONFIG, result.output
    said = " ".join(result.output.split())
    assert "can be read by others" in said and f"chmod 600 {token_file}" in said
    assert "Traceback" not in result.output and m.runner.mutations == 0


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_token_file_is_taken(sim, tmp_path, mode):
    _, config = sim()
    token_file = tmp_path / "token"
    token_file.write_text("abcdef.0123456789abcdef\n")
    os.chmod(token_file, mode)
    result = _node(config, "--token-file", str(token_file))
    assert result.exit_code in (0, ExitCode.PREFLIGHT), result.output  # the plan was made
    assert "kubeadm-join" in result.output and "abcdef.0123456789abcdef" not in result.output


def test_the_token_from_the_environment_is_taken_and_not_passed_on(sim, monkeypatch):
    _, config = sim()
    monkeypatch.setenv("FRAKTI_INSTALL_JOIN_TOKEN", "abcdef.0123456789abcdef")
    result = _node(config)
    assert result.exit_code in (0, ExitCode.PREFLIGHT), result.output
    assert "kubeadm-join" in result.output
    assert "FRAKTI_INSTALL_JOIN_TOKEN" not in os.environ  # kubeadm & co. do not inherit it


@pytest.mark.parametrize(
    ("extra", "message"),
    [((), "no join token given"),
     (("--token", "abcdef.0123456789abcdef", "--token-file", "/nonexistent"),
      "two join tokens given"),
     (("--token-file", "/nonexistent/token"), "--token-file /nonexistent/token")],
)  # fmt: skip
def test_a_missing_or_doubled_token_is_a_clear_error(sim, extra, message):
    m, config = sim()
    result = _node(config, *extra)
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert m.runner.mutations == 0


def test_token_file_reader_strips_the_newline(tmp_path: Path):
    token_file = tmp_path / "t"
    token_file.write_text("abcdef.0123456789abcdef\n")
    token_file.chmod(0o600)
    assert joining.read_token_file(token_file) == "abcdef.0123456789abcdef"


# --- the e2e stand-ins read the files as kubeadm (and PyYAML) do -------------------
def _standin_common():
    import importlib.util

    path = Path(__file__).parents[1] / "e2e/standins/common.py"
    spec = importlib.util.spec_from_file_location("standin_common", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize("schema", ["kubeadm.k8s.io/v1alpha3", "kubeadm.k8s.io/v1beta4"])
@pytest.mark.parametrize("advertise", ["", "192.168.56.10"])
def test_the_e2e_standins_read_the_config_files_as_yaml_does(tmp_path, schema, advertise):
    from frakti_install.render import render

    common = _standin_common()
    old = schema.endswith("v1alpha3")
    files = {
        "init": render(
            "kubeadm-init.yaml.j2", api_version=schema, token="abcdef.0123456789abcdef",
            endpoint_key="apiEndpoint" if old else "localAPIEndpoint",
            pod_subnet="10.244.0.0/16", service_subnet="10.96.0.0/12",
            kubernetes_version="v1.12.10", cri_socket="/var/run/frakti.sock",
            node_name="n", advertise_address=advertise,
        ),
        "join": render(
            "kubeadm-join.yaml.j2", api_version=schema, flat=old,
            token="abcdef.0123456789abcdef", endpoint="10.0.0.1:6443", ca_hash=CA_HASH,
            node_name="n", cri_socket="/var/run/frakti.sock",
        ),
    }  # fmt: skip
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        assert common.read_yaml_documents(str(path)) == list(yaml.safe_load_all(text)), name
    flags, error = common.kubeadm_config_flags(
        str(tmp_path / "join"), (schema,), {"config": "x"}, ("config",)
    )
    assert error is None and flags["api-server"] == "10.0.0.1:6443"
    assert flags["token"] == "abcdef.0123456789abcdef"
    assert flags["discovery-token-ca-cert-hash"] == [CA_HASH]
    _, error = common.kubeadm_config_flags(
        str(tmp_path / "init"), ("kubeadm.k8s.io/v1beta3",), {"config": "x"}, ("config",)
    )
    assert error.startswith('no kind "InitConfiguration" is registered for version')
    _, error = common.kubeadm_config_flags(
        str(tmp_path / "init"), (schema,), {"config": "x", "token": "t"}, ("config",)
    )
    assert error == "can not mix '--config' with arguments [token]"
