"""vagrant/: the lab's Vagrantfile, provisioning script and settings.

Checked as far as this machine allows: `ruby -c` and a dry evaluation of the
Vagrantfile against a recording stand-in for Vagrant's DSL (skipped without
ruby), `vagrant validate` (skipped without vagrant), `bash -n` on the scripts,
and the provisioning script itself run with stand-ins for python and
frakti-install.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from frakti_install import config

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "vagrant"
VAGRANTFILE = LAB / "Vagrantfile"
IPS = {"master": "192.168.56.10", "worker1": "192.168.56.11", "worker2": "192.168.56.12"}

needs_ruby = pytest.mark.skipif(
    shutil.which("ruby") is None, reason="ruby is not installed (apt-get install ruby)"
)

# Records what a Vagrantfile asks of Vagrant, as JSON. Blocks run with
# recorders; trigger.ruby blocks are recorded, never run.
RECORDER = r"""
require "json"

class Recorder
  def initialize
    @attrs = {}
    @calls = []
    @children = {}
  end

  def method_missing(name, *args, **kw, &block)
    name = name.to_s
    if name.end_with?("=")
      @attrs[name.chomp("=")] = args.first
    elsif block && name != "ruby"
      inner, override = Recorder.new, Recorder.new
      block.arity == 2 ? block.call(inner, override) : block.call(inner)
      @calls << { "name" => name, "args" => args, "kw" => kw,
                  "block" => inner.to_h, "override" => override.to_h }
    elsif block || !args.empty? || !kw.empty?
      @calls << { "name" => name, "args" => args, "kw" => kw }
    else
      return @children[name] ||= Recorder.new
    end
    nil
  end

  def respond_to_missing?(*)
    true
  end

  def to_h
    { "attrs" => @attrs, "calls" => @calls,
      "children" => @children.map { |k, v| [k, v.to_h] }.to_h }
  end
end

module Vagrant
  def self.require_version(*); end

  def self.configure(_version)
    $vagrant = Recorder.new
    yield $vagrant
  end
end

load ARGV[0]
puts JSON.generate($vagrant.to_h)
"""


def _evaluate(tmp_path: Path, **env: str) -> Dict[str, Any]:
    harness = tmp_path / "recorder.rb"
    harness.write_text(RECORDER)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FRAKTI_")}
    result = subprocess.run(
        ["ruby", str(harness), str(VAGRANTFILE)],
        capture_output=True,
        text=True,
        env={**clean, **env},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _calls(node: Dict[str, Any], name: str) -> List[Dict[str, Any]]:
    return [call for call in node["calls"] if call["name"] == name]


def _provider(tree: Dict[str, Any], name: str) -> Dict[str, Any]:
    (call,) = [c for c in _calls(tree["children"]["vm"], "provider") if c["args"] == [name]]
    return call


@needs_ruby
def test_vagrantfile_is_ruby() -> None:
    result = subprocess.run(["ruby", "-c", str(VAGRANTFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Syntax OK" in result.stdout


@needs_ruby
@pytest.mark.parametrize(
    "box, default, libvirt",
    [
        (None, "bento/ubuntu-20.04", "generic/ubuntu2004"),
        ("ubuntu", "bento/ubuntu-20.04", "generic/ubuntu2004"),
        ("ubuntu18.04", "bento/ubuntu-18.04", "generic/ubuntu1804"),
        ("centos", "bento/centos-7", "generic/centos7"),
    ],
)
def test_lab_machines(tmp_path: Path, box: str, default: str, libvirt: str) -> None:
    tree = _evaluate(tmp_path, **({"FRAKTI_BOX": box} if box else {}))
    vm = tree["children"]["vm"]
    assert vm["attrs"]["box"] == default
    (sync,) = _calls(vm, "synced_folder")
    assert sync["args"][:2] == [str(ROOT), "/vagrant"]

    virtualbox = _provider(tree, "virtualbox")["block"]
    assert (virtualbox["attrs"]["cpus"], virtualbox["attrs"]["memory"]) == (2, 2048)
    customize = [c["args"][0] for c in _calls(virtualbox, "customize")]
    assert ["modifyvm", "id", "--nested-hw-virt", "on"] in customize
    lv = _provider(tree, "libvirt")
    assert lv["override"]["children"]["vm"]["attrs"]["box"] == libvirt
    assert lv["block"]["attrs"] == {
        "cpus": 2,
        "memory": 2048,
        "nested": True,
        "cpu_mode": "host-passthrough",
    }

    machines = {d["args"][0]: d for d in _calls(vm, "define")}
    assert list(machines) == ["master", "worker1", "worker2"]
    assert machines["master"]["kw"] == {"primary": True}
    for name, machine in machines.items():
        mvm = machine["block"]["children"]["vm"]
        assert mvm["attrs"]["hostname"] == f"frakti-{name}"
        (network,) = _calls(mvm, "network")
        assert network["args"] == ["private_network"] and network["kw"] == {"ip": IPS[name]}
        (provision,) = _calls(mvm, "provision")
        assert provision["kw"]["path"] == "provision.sh"
        assert provision["kw"]["args"] == ["master" if name == "master" else "worker"]
        hosts = provision["kw"]["env"]["FRAKTI_LAB_HOSTS"].splitlines()
        assert hosts == [f"{ip} frakti-{n}" for n, ip in IPS.items()]
    subnets = [
        _calls(m["block"]["children"]["vm"], "provision")[0]["kw"]["env"][
            "FRAKTI_INSTALL_NODE_SUBNET"
        ]
        for m in machines.values()
    ]
    settings = config.load(LAB / "lab.yaml", environ={})
    assert subnets[0] == settings.node_subnet
    for subnet in subnets:  # each node's subnet is a valid setting next to lab.yaml
        config.load(LAB / "lab.yaml", environ={"FRAKTI_INSTALL_NODE_SUBNET": subnet})
    assert len(set(subnets)) == 3
    trigger = machines["master"]["block"]["children"]["trigger"]
    assert _calls(trigger, "after")[0]["args"] == ["destroy"]


@needs_ruby
def test_unknown_box_is_refused(tmp_path: Path) -> None:
    harness = tmp_path / "recorder.rb"
    harness.write_text(RECORDER)
    result = subprocess.run(
        ["ruby", str(harness), str(VAGRANTFILE)],
        capture_output=True,
        text=True,
        env={**os.environ, "FRAKTI_BOX": "windows"},
    )
    assert result.returncode != 0
    assert "FRAKTI_BOX=windows is not one of ubuntu, ubuntu18.04, centos" in result.stderr


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed")
@pytest.mark.parametrize("box", ["ubuntu", "centos"])
def test_vagrant_validate(box: str) -> None:
    result = subprocess.run(
        ["vagrant", "validate"],
        cwd=LAB,
        capture_output=True,
        text=True,
        env={**os.environ, "FRAKTI_BOX": box, "VAGRANT_CHECKPOINT_DISABLE": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_scripts_exist_and_parse() -> None:
    text = VAGRANTFILE.read_text()
    scripts = re.findall(r"""\bpath:\s*["']([^"']+)["']""", text)
    assert scripts == ["provision.sh"]
    for script in scripts:
        assert (LAB / script).is_file(), script
    for shell_script in sorted(LAB.glob("*.sh")):
        result = subprocess.run(["bash", "-n", str(shell_script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{shell_script.name}: {result.stderr}"
        assert not re.search(r"^\s*set -[a-z]*x", shell_script.read_text(), re.M)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_provisioning_scripts_pass_shellcheck() -> None:
    scripts = [str(p) for p in sorted(LAB.glob("*.sh"))]
    result = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lab_settings_and_gitignore() -> None:
    settings = config.load(LAB / "lab.yaml", environ={})
    assert (settings.pod_cidr, settings.node_subnet) == ("10.244.0.0/16", "10.244.1.0/24")
    ignored = (LAB / ".gitignore").read_text().split()
    assert ".join" in ignored and ".vagrant/" in ignored
    assert (LAB / "README.md").is_file()


# ------------------------------------------- provision.sh with stand-ins

TOKEN = "kubeadm join 192.168.56.10:6443 --token abcdef.0123456789abcdef"
FAKE_FRAKTI = f"""#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
if [ "$1" = join-command ]; then echo '{TOKEN}'; fi
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A checkout whose bootstrap.py only records its arguments."""
    checkout = tmp_path / "checkout"
    (checkout / "vagrant").mkdir(parents=True)
    shutil.copy(LAB / "provision.sh", checkout / "vagrant")
    shutil.copy(LAB / "lab.yaml", checkout / "vagrant")
    (checkout / "bootstrap.py").write_text(
        "import sys\nopen(sys.argv[0] + '.calls', 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "frakti-install").write_text(FAKE_FRAKTI)
    (bin_dir / "frakti-install").chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    return checkout


def _provision(project: Path, role: str, **env: str) -> subprocess.CompletedProcess:
    bin_dir = project.parent / "bin"
    full_env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FRAKTI_LAB_PROJECT": str(project),
        "FRAKTI_LAB_BIN": str(bin_dir / "frakti-install"),
        "FRAKTI_LAB_PREPARE": "0",  # never touch this machine's /etc/hosts, swap, repos
        **env,
    }
    return subprocess.run(
        ["bash", str(project / "vagrant/provision.sh"), role],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def test_master_writes_the_join_command_privately(project: Path) -> None:
    result = _provision(project, "master")
    assert result.returncode == 0, result.stderr
    join = project / "vagrant/.join"
    assert join.read_text() == TOKEN + "\n"
    assert stat.S_IMODE(join.stat().st_mode) == 0o600
    assert "abcdef" not in result.stdout + result.stderr
    assert list((project / "vagrant").glob(".join.*")) == []
    assert (project / "bootstrap.py.calls").read_text() == f"--from-path {project}\n"
    calls = (project.parent / "bin/calls").read_text().splitlines()
    assert calls == [f"allinone --yes --config {project}/vagrant/lab.yaml", "join-command"]


def test_worker_joins_with_the_masters_command(project: Path) -> None:
    (project / "vagrant/.join").write_text(TOKEN + "\n")
    result = _provision(project, "worker", FRAKTI_BOOTSTRAP_ARGS="--bundle /vagrant/b.tar.gz")
    assert result.returncode == 0, result.stderr
    assert "abcdef" not in result.stdout + result.stderr
    assert (project / "bootstrap.py.calls").read_text() == "--bundle /vagrant/b.tar.gz\n"
    calls = (project.parent / "bin/calls").read_text().splitlines()
    assert calls == [f"node --yes --config {project}/vagrant/lab.yaml --join {TOKEN}"]


def test_worker_gives_up_without_a_master(project: Path) -> None:
    result = _provision(project, "worker", FRAKTI_JOIN_WAIT="0")
    assert result.returncode == 1
    assert "bring the master up first" in result.stderr


def test_failed_join_command_leaves_no_file(project: Path) -> None:
    (project.parent / "bin/frakti-install").write_text(
        '#!/bin/sh\n[ "$1" = join-command ] && exit 3\nexit 0\n'
    )
    result = _provision(project, "master")
    assert result.returncode == 1
    assert "join-command failed" in result.stderr
    assert sorted(p.name for p in (project / "vagrant").iterdir()) == ["lab.yaml", "provision.sh"]
