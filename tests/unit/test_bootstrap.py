"""bootstrap.py: old-Python syntax, its decisions, and a real offline install.

The install tests need no network: the bundle they feed to bootstrap.py is
made of wheels repacked from what is installed in the running environment
(frakti-install's own from src/, its dependencies from their RECORD files).
"""

from __future__ import annotations

import base64
import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional

import pytest

from frakti_install import __version__

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "bootstrap.py"
SKIP_DIST_INFO = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}


def load_bootstrap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("frakti_bootstrap", BOOTSTRAP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bs = load_bootstrap()


# ------------------------------------------------------------ old Pythons


def _vermin() -> List[str]:
    beside = Path(sys.executable).parent / "vermin"
    found = str(beside) if beside.exists() else shutil.which("vermin")
    if not found:
        pytest.fail("vermin is missing: pip install -e '.[test]'")
    return [found, "--no-config-file", "--no-tips"]


def test_vermin_says_python_2_7_and_3_5_suffice() -> None:
    lint = subprocess.run(
        [*_vermin(), "--violations", "-t=2.7-", "-t=3.5-", str(BOOTSTRAP)],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    report = subprocess.run([*_vermin(), str(BOOTSTRAP)], capture_output=True, text=True)
    match = re.search(r"Minimum required versions: (\d+)\.(\d+), (\d+)\.(\d+)", report.stdout)
    assert match, report.stdout + report.stderr
    py2, py3 = (int(match[1]), int(match[2])), (int(match[3]), int(match[4]))
    assert py2 <= (2, 7) and py3 <= (3, 5), report.stdout


def _old_python(version: str) -> Optional[str]:
    """A working pythonX.Y: on PATH, else an installed pyenv version."""
    pattern = os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")
    for path in [shutil.which(f"python{version}"), *sorted(glob.glob(pattern))]:
        if path and subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0:
            return path
    return None


SMOKE = """
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import bootstrap as b
opts = b.parse_args(["--pip-arg=--no-deps", "--", "allinone", "--yes"], {})
assert opts.args == ["allinone", "--yes"] and opts.pip_args == ["--no-deps"], opts.args
assert opts.prefix == "/opt/frakti-install"
plan, advice = b.python_install_plan({"ID": "centos", "VERSION_ID": "7"})
assert plan[1] == ["yum", "install", "-y", "rh-python38-python"], plan
found = b.find_python([sys.argv[2]])
assert found and found[0] == sys.argv[2] and found[1] >= (3, 8), found
print("ok")
"""


@pytest.mark.parametrize("version", ["2.7", "3.5"])
def test_old_python_compiles_and_runs_the_finder(version: str) -> None:
    python = _old_python(version)
    if python is None:
        pytest.skip(f"no working python{version} on this machine")
    compiled = subprocess.run(
        [
            python,
            "-c",
            "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')",
            str(BOOTSTRAP),
        ],
        capture_output=True,
        text=True,
    )
    assert compiled.returncode == 0, compiled.stderr
    smoke = subprocess.run(
        [python, "-c", SMOKE, str(ROOT), sys.executable], capture_output=True, text=True
    )
    assert smoke.stdout.strip() == "ok", smoke.stdout + smoke.stderr


# ------------------------------------------------------------- command line


def test_arguments_split_at_double_dash_or_first_word() -> None:
    env = {"FRAKTI_INSTALL_PREFIX": "/p", "FRAKTI_INSTALL_BIN_LINK": "/b/fi"}
    opts = bs.parse_args(
        ["--bundle", "/tmp/b.tar.gz", "--", "allinone", "--yes", "--bundle", "/tmp/b.tar.gz"], env
    )
    assert opts.bundle == "/tmp/b.tar.gz"
    assert opts.args == ["allinone", "--yes", "--bundle", "/tmp/b.tar.gz"]
    assert (opts.prefix, opts.bin_link) == ("/p", "/b/fi")
    opts = bs.parse_args(["--version=0.1.0", "--pip-arg", "--no-deps", "allinone", "--yes"], {})
    assert (opts.version, opts.pip_args) == ("0.1.0", ["--no-deps"])
    assert opts.args == ["allinone", "--yes"]
    assert (opts.prefix, opts.bin_link) == (bs.DEFAULT_PREFIX, bs.DEFAULT_BIN_LINK)
    assert bs.parse_args([], {}).args == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--yes"],  # frakti-install's option before its command
        ["--from-url", "http://example.com/f.whl"],
        ["--from-url", "ftp://example.com/f.whl"],
        ["--from-url", "https://example.com/f.whl", "--bundle", "b"],
        ["--from-path", ".", "--version", "1"],
        ["--bundle"],
    ],
)
def test_bad_bootstrap_arguments_exit_2(argv: List[str]) -> None:
    with pytest.raises(bs.BootstrapError) as caught:
        bs.parse_args(argv, {})
    assert caught.value.code == 2


def test_plain_http_needs_insecure_http() -> None:
    opts = bs.parse_args(["--insecure-http", "--from-url", "http://mirror/f.whl"], {})
    assert opts.from_url == "http://mirror/f.whl"


def test_refused_url_exits_2_before_touching_anything(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BOOTSTRAP), "--from-url", "http://example.com/f.whl"],
        capture_output=True,
        text=True,
        env={**os.environ, "FRAKTI_INSTALL_PREFIX": str(tmp_path / "venv")},
    )
    assert result.returncode == 2
    assert "not https://" in result.stderr
    assert not (tmp_path / "venv").exists()


# ----------------------------------------------------------- finding Python

APT = ["apt-get", "install", "-y", "-q"]
# /etc/os-release as these systems ship it (the lines that matter), and the plan
EXPECTED_PLANS = {
    'ID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\n': [
        ["yum", "install", "-y", "centos-release-scl"],
        ["yum", "install", "-y", "rh-python38-python"],
    ],
    'ID="rhel"\nID_LIKE="fedora"\nVERSION_ID="7.9"\n': None,
    'ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="8.9"\n': [
        ["dnf", "install", "-y", "python39"]
    ],
    'ID="almalinux"\nID_LIKE="rhel centos fedora"\nVERSION_ID="8.9"\n': [
        ["dnf", "install", "-y", "python39"]
    ],
    'ID="rhel"\nID_LIKE="fedora"\nVERSION_ID="8.10"\n': [["dnf", "install", "-y", "python39"]],
    'ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n': [
        ["dnf", "install", "-y", "python3"]
    ],
    'ID="almalinux"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n': [
        ["dnf", "install", "-y", "python3"]
    ],
    'ID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.4"\n': [["dnf", "install", "-y", "python3"]],
    'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="16.04"\n': None,
    'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="18.04"\n': [APT + ["python3.8", "python3.8-venv"]],
    'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="20.04"\n': [APT + ["python3", "python3-venv"]],
    'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\n': [APT + ["python3", "python3-venv"]],
    'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n': [APT + ["python3", "python3-venv"]],
    'ID=debian\nVERSION_ID="10"\n': None,
    'ID=debian\nVERSION_ID="11"\n': [APT + ["python3", "python3-venv"]],
    'ID=debian\nVERSION_ID="12"\n': [APT + ["python3", "python3-venv"]],
    "ID=arch\n": None,
}


@pytest.mark.parametrize(
    "system", sorted(EXPECTED_PLANS), ids=lambda text: re.sub(r"\W+", "-", text).strip("-")
)
def test_python_comes_from_the_os_repositories(system: str, tmp_path: Path) -> None:
    os_release = tmp_path / "os-release"
    os_release.write_text('NAME="Some Linux"\n# comment\n' + system)
    plan, advice = bs.python_install_plan(bs.read_os_release(str(os_release)))
    if plan is not None:
        plan = [argv for argv in plan if argv[:2] != ["apt-get", "update"]]
    assert plan == EXPECTED_PLANS[system]
    assert (advice is None) == (plan is not None)


def test_ubuntu_1604_without_python_exits_3_saying_what_to_install(tmp_path: Path) -> None:
    osr = {"ID": "ubuntu", "VERSION_ID": "16.04", "PRETTY_NAME": "Ubuntu 16.04.7 LTS"}
    opts = bs.parse_args(["--no-install-python"], {"FRAKTI_INSTALL_PREFIX": str(tmp_path)})
    with pytest.raises(bs.BootstrapError) as caught:
        bs.ensure_python(opts, osr=osr, candidates=[])
    assert caught.value.code == 3
    assert "no Python >= 3.8 in its archive" in caught.value.hint
    assert "--python PATH" in caught.value.hint


def test_centos7_without_python_says_the_scl_commands(tmp_path: Path) -> None:
    opts = bs.parse_args(["--no-install-python"], {"FRAKTI_INSTALL_PREFIX": str(tmp_path)})
    with pytest.raises(bs.BootstrapError) as caught:
        bs.ensure_python(opts, osr={"ID": "centos", "VERSION_ID": "7"}, candidates=[])
    assert caught.value.code == 3
    assert "yum install -y centos-release-scl; yum install -y rh-python38-python" in (
        caught.value.hint
    )


def test_root_installs_python_from_the_os_then_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: List[List[str]] = []
    installed = tmp_path / "usr-bin"

    def fake_run(argv: List[str], env: object = None) -> int:
        calls.append(argv)
        if argv[:2] == ["apt-get", "install"]:
            _fake_python(installed, "python3.8", "3.8.0 1")
        return 0

    monkeypatch.setattr(bs, "run", fake_run)
    monkeypatch.setattr(bs, "is_root", lambda: True)
    monkeypatch.setattr(bs, "candidate_paths", lambda: sorted(map(str, installed.glob("*"))))
    opts = bs.parse_args([], {"FRAKTI_INSTALL_PREFIX": str(tmp_path / "venv")})
    found = bs.ensure_python(opts, osr={"ID": "ubuntu", "VERSION_ID": "18.04"}, candidates=[])
    assert calls == [
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "python3.8", "python3.8-venv"],
    ]
    assert found == (str(installed / "python3.8"), (3, 8, 0), True)


def _fake_python(directory: Path, name: str, answer: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\nprintf '{answer}'\n")
    path.chmod(0o755)
    return str(path)


def test_finder_prefers_new_pythons_with_venv(tmp_path: Path) -> None:
    bin_dir, usr_bin = tmp_path / "bin", tmp_path / "usr-bin"
    _fake_python(bin_dir, "python3", "3.6.9 1")  # too old
    newest = _fake_python(bin_dir, "python3.9", "3.9.2 0")  # no venv module
    with_venv = _fake_python(usr_bin, "python3.8", "3.8.10 1")
    scl = tmp_path / "opt/rh/rh-python38/root/usr/bin"
    _fake_python(scl, "python3", "3.8.13 1")
    scl_glob = str(tmp_path / "opt/rh/*/root/usr/bin")
    found = bs.candidate_paths(str(bin_dir), [str(usr_bin)], scl_glob)
    assert found[:2] == [newest, with_venv]
    assert found[-1] == str(scl / "python3")
    assert bs.find_python(found)[:3] == (with_venv, (3, 8, 10), True)
    assert bs.find_python([newest])[:3] == (newest, (3, 9, 2), False)
    assert bs.find_python([str(bin_dir / "python3")]) is None
    assert bs.find_python([with_venv], exclude_dir=str(usr_bin)) is None


def test_the_virtualenvs_own_python_is_never_the_base(tmp_path: Path) -> None:
    (tmp_path / "venv/bin").mkdir(parents=True)
    own = tmp_path / "venv/bin/python3"
    own.symlink_to(sys.executable)
    assert bs.find_python([str(own)], exclude_dir=str(tmp_path / "venv")) is None
    assert bs.find_python([str(own)])[0] == str(own)


def test_missing_venv_module_exits_4_naming_the_package(tmp_path: Path) -> None:
    prefix = tmp_path / "venv"
    prefix.mkdir()
    opts = bs.parse_args(["--no-install-python"], {"FRAKTI_INSTALL_PREFIX": str(prefix)})
    osr = {"ID": "ubuntu", "VERSION_ID": "18.04"}
    with pytest.raises(bs.BootstrapError) as caught:
        bs.ensure_venv("/usr/bin/python3.8", opts, (3, 8, 0), venv_ok=False)
    assert caught.value.code == 4
    assert prefix.is_dir()  # nothing removed before the interpreter is known to be usable
    with pytest.raises(bs.BootstrapError) as caught:
        bs.ensure_venv_support("/usr/bin/python3.8", (3, 8, 0), opts, osr=osr)
    assert caught.value.code == 4
    assert caught.value.hint == "Install it: apt-get install -y -q python3.8-venv"


# ----------------------------------------------------- venv, bundle, link


def test_a_directory_that_is_not_a_venv_is_never_removed(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("keep me")
    opts = bs.parse_args([], {"FRAKTI_INSTALL_PREFIX": str(tmp_path)})
    with pytest.raises(bs.BootstrapError) as caught:
        bs.ensure_venv(sys.executable, opts)
    assert caught.value.code == 4
    assert (tmp_path / "precious").read_text() == "keep me"


def _record_commands(monkeypatch: pytest.MonkeyPatch) -> List[List[str]]:
    """bootstrap's run() records the argv and succeeds."""
    calls: List[List[str]] = []

    def fake_run(argv: List[str], env: object = None) -> int:
        calls.append(argv)
        return 0

    monkeypatch.setattr(bs, "run", fake_run)
    return calls


def test_pip_arg_and_system_site_packages_reach_the_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_commands(monkeypatch)
    monkeypatch.setattr(bs, "venv_healthy", lambda prefix: bool(calls))
    bundle = _bundle_dir(tmp_path / "bundle", {"frakti_install-0.1.0-py3-none-any.whl": b""})
    prefix = tmp_path / "venv"
    opts = bs.parse_args(
        [
            "--system-site-packages",
            "--pip-arg=--no-deps",
            "--bundle",
            str(bundle),
            "--version",
            "0.1.0",
        ],
        {"FRAKTI_INSTALL_PREFIX": str(prefix)},
    )
    python = bs.ensure_venv("/usr/bin/python3.9", opts)
    assert calls[0] == ["/usr/bin/python3.9", "-m", "venv", "--system-site-packages", str(prefix)]
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin/frakti-install").write_text("")
    (prefix / "bin/frakti-install").chmod(0o755)
    bs.install(python, opts)
    assert calls[-1] == [
        python,
        "-m",
        "pip",
        "install",
        "--no-input",
        "--upgrade",
        "--no-deps",
        "--no-index",
        "--find-links",
        str(bundle / "wheels"),
        "frakti-install==0.1.0",
    ]


@pytest.mark.parametrize(
    "argv, target",
    [
        ([], "frakti-install"),
        (["--version", "0.2.0"], "frakti-install==0.2.0"),
        (["--from-url", "https://example.com/f.whl"], "https://example.com/f.whl"),
    ],
)
def test_online_installs_upgrade_pip_then_frakti_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: List[str], target: str
) -> None:
    calls = _record_commands(monkeypatch)
    opts = bs.parse_args(argv, {"FRAKTI_INSTALL_PREFIX": str(tmp_path)})
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/frakti-install").write_text("")
    (tmp_path / "bin/frakti-install").chmod(0o755)
    bs.install("/v/bin/python", opts)
    pip = ["/v/bin/python", "-m", "pip", "install", "--no-input", "--upgrade"]
    assert calls == [pip + ["pip"], pip + [target]]


def test_pip_failure_exits_5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bs, "run", lambda argv, env=None: 1)
    opts = bs.parse_args([], {"FRAKTI_INSTALL_PREFIX": str(tmp_path)})
    with pytest.raises(bs.BootstrapError) as caught:
        bs.install("/v/bin/python", opts)
    assert caught.value.code == 5


def _bundle_dir(root: Path, wheels: Dict[str, bytes]) -> Path:
    (root / "wheels").mkdir(parents=True)
    for name, data in wheels.items():
        (root / "wheels" / name).write_bytes(data)
    manifest = {"wheels": [f"wheels/{name}" for name in wheels]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_bad_bundles_exit_6(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = _bundle_dir(tmp_path / "missing", {"frakti_install-0.1.0-py3-none-any.whl": b""})
    (missing / "wheels/frakti_install-0.1.0-py3-none-any.whl").unlink()
    foreign = _bundle_dir(tmp_path / "foreign", {"requests-2.0-py3-none-any.whl": b""})
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(str(foreign / "manifest.json"), arcname="../manifest.json")
    sneaky = tmp_path / "sneaky.tar.gz"
    with tarfile.open(sneaky, "w:gz") as tar:
        member = tarfile.TarInfo("b/wheels/passwd")
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(member)
    for bad in (empty, missing, foreign, evil, sneaky, tmp_path / "nonexistent"):
        with pytest.raises(bs.BootstrapError) as caught:
            bs.open_bundle(str(bad), str(work))
        assert caught.value.code == 6, bad
    assert not (tmp_path / "manifest.json").exists()


def test_link_is_replaced_atomically(tmp_path: Path) -> None:
    link = tmp_path / "bin/frakti-install"
    bs.link("/opt/a/bin/frakti-install", str(link))
    assert os.readlink(link) == "/opt/a/bin/frakti-install"
    bs.link("/opt/b/bin/frakti-install", str(link))
    assert os.readlink(link) == "/opt/b/bin/frakti-install"
    assert sorted(p.name for p in link.parent.iterdir()) == ["frakti-install"]  # no temp left
    (tmp_path / "file").write_text("")
    with pytest.raises(bs.BootstrapError) as caught:
        bs.link("/opt/b/bin/frakti-install", str(tmp_path / "file/frakti-install"))
    assert caught.value.code == 7


# ------------------------------------------------ real install, offline
# These run venv and pip for real: ~8 s per fresh virtualenv (the first test
# makes two), about 25 s together.


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _write_wheel(path: Path, files: Dict[str, bytes], dist_info: str) -> None:
    record = [_record_line(arc, data) for arc, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for arc, data in files.items():
            whl.writestr(arc, data)
        whl.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")


def _repack(dist: metadata.Distribution, out: Path) -> Path:
    """A wheel rebuilt from an installed distribution (frakti-install: from src/)."""
    files: Dict[str, bytes] = {}
    if _canonical(dist.metadata["Name"]) == "frakti-install":
        dist_info = f"frakti_install-{dist.version}.dist-info"
        tag = "py3-none-any"
        package = ROOT / "src" / "frakti_install"
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[path.relative_to(package.parent).as_posix()] = path.read_bytes()
        for meta in ("METADATA", "entry_points.txt"):
            files[f"{dist_info}/{meta}"] = (dist.read_text(meta) or "").encode()
        files[f"{dist_info}/WHEEL"] = (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
    else:
        wheel_meta = dist.read_text("WHEEL") or ""
        tags = [t.split("-") for t in re.findall(r"^Tag: (\S+)", wheel_meta, re.M)]
        tag = "-".join(".".join(dict.fromkeys(part)) for part in zip(*tags))  # py2.py3-none-any
        dist_info = ""
        for entry in dist.files or []:
            arc = entry.as_posix()
            top = arc.split("/")[0]
            if arc.startswith("..") or "__pycache__" in arc:
                continue
            if top.endswith(".dist-info"):
                dist_info = top
                if entry.name in SKIP_DIST_INFO:
                    continue
            files[arc] = Path(str(dist.locate_file(entry))).read_bytes()
    name = dist_info[: -len(f"-{dist.version}.dist-info")]
    wheel = out / f"{name}-{dist.version}-{tag}.whl"
    _write_wheel(wheel, files, dist_info)
    return wheel


def _dependency_closure(root: str) -> List[metadata.Distribution]:
    todo, seen = [root], {}
    while todo:
        name = todo.pop()
        if _canonical(name) in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # only a marker-excluded requirement is not installed
        seen[_canonical(name)] = dist
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)[0])  # type: ignore[index]
    return list(seen.values())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("bundle") / "frakti-install-bundle"
    (root / "wheels").mkdir(parents=True)
    wheels = [_repack(d, root / "wheels") for d in _dependency_closure("frakti-install")]
    manifest = {"wheels": [f"wheels/{w.name}" for w in wheels]}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    archive = root.parent / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(str(root), arcname=root.name)
    return {"dir": root, "tar": archive}


def _env(tmp_path: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        FRAKTI_INSTALL_PREFIX=str(tmp_path / "opt/frakti-install"),
        FRAKTI_INSTALL_BIN_LINK=str(tmp_path / "usr/local/bin/frakti-install"),
        PIP_NO_INDEX="1",  # hermetic: pip may only look at the bundle
        PIP_NO_CACHE_DIR="1",
    )
    env.pop("PYTHONPATH", None)
    return env


def test_piped_install_rerun_and_repair(tmp_path: Path, bundle: Dict[str, Path]) -> None:
    env = _env(tmp_path)
    prefix = Path(env["FRAKTI_INSTALL_PREFIX"])
    link = Path(env["FRAKTI_INSTALL_BIN_LINK"])
    command = prefix / "bin" / "frakti-install"

    # curl ... | python - --bundle B.tar.gz -- --version
    with open(BOOTSTRAP, "rb") as script:
        first = subprocess.run(
            [sys.executable, "-", "--bundle", str(bundle["tar"]), "--", "--version"],
            stdin=script,
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"frakti-install {__version__}\n"
    assert (prefix / "pyvenv.cfg").is_file()
    assert os.readlink(link) == str(command)
    installed = glob.glob(str(prefix / "lib/python*/site-packages/frakti_install-*.dist-info"))
    assert len(installed) == 1, installed
    before = (os.stat(prefix / "bin/python").st_ino, os.stat(installed[0]).st_mtime_ns)

    # again, from the unpacked bundle, after the link was lost: repaired, nothing else
    link.unlink()
    second = subprocess.run(
        [sys.executable, str(BOOTSTRAP), "--bundle", str(bundle["dir"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout == ""
    assert "healthy" in second.stderr
    assert os.readlink(link) == str(command)
    after = (os.stat(prefix / "bin/python").st_ino, os.stat(installed[0]).st_mtime_ns)
    assert after == before

    # a broken virtualenv python is recreated
    (prefix / "bin/python").unlink()
    third = subprocess.run(
        [sys.executable, str(BOOTSTRAP), "--bundle", str(bundle["dir"]), "--", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert third.returncode == 0, third.stderr
    assert "broken; recreating" in third.stderr
    assert third.stdout == f"frakti-install {__version__}\n"
    result = subprocess.run([str(link), "--version"], capture_output=True, text=True)
    assert result.stdout == f"frakti-install {__version__}\n"


def test_python27_runs_the_whole_bootstrap(tmp_path: Path, bundle: Dict[str, Path]) -> None:
    python27 = _old_python("2.7")
    if python27 is None:
        pytest.skip("no working python2.7 on this machine")
    env = _env(tmp_path)
    result = subprocess.run(
        [
            python27,
            str(BOOTSTRAP),
            "--python",
            sys.executable,
            "--bundle",
            str(bundle["tar"]),
            "--",
            "--version",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"frakti-install {__version__}\n"
    assert os.readlink(env["FRAKTI_INSTALL_BIN_LINK"]).startswith(env["FRAKTI_INSTALL_PREFIX"])
