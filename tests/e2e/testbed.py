"""A real Debian host (12 "bookworm" by default; 13 "trixie" and sid too), booted
with systemd in a container, for end-to-end tests.

The pieces, in the order a test uses them:

- ``host_problem()`` says why this machine cannot run the tests (not root, no
  systemd-nspawn, no overlayfs), after installing debootstrap and
  systemd-container with apt-get when they are missing.
- ``ensure_image(suite)`` builds (once per suite, cached under /var/cache) a
  minbase Debian tree of that suite with debootstrap from the archive the
  host's apt sources already use (the same mirror serves every suite; only
  the suite names in the host's entries are changed). The container gets no
  network, so the build also downloads (does not install) the .debs the
  installer will ask apt for, leaving apt's cache and lists in the image:
  apt-get install then works offline inside, from that cache.
- ``Machine`` boots a fresh overlay over that image with systemd-nspawn
  (private network, all capabilities), runs commands inside with nsenter,
  reads and writes files, and is torn down completely by ``stop()``. With
  ``cgroup_v2`` the container gets a cgroup v2 hierarchy although this host
  is cgroup v1 hybrid (``UNIFIED_ONLY``: suites whose systemd needs it).
- ``build_mirror()`` / ``serve_mirror()`` lay out the stand-ins (see
  standins/) like their upstream download hosts and serve them inside the
  container on 127.0.0.1:8080.
- ``build_wheelhouse()`` / ``install_project()`` install frakti-install inside
  the container the way a user without network would: a wheel and its
  dependency wheels, ``pip install --no-index``.

The machine the container imitates has one network card: eth0, 10.0.2.15/24,
default route via 10.0.2.2. Both ends of that veth pair live in the
container's own network namespace, so nothing sent there leaves it; it exists
because kubeadm and frakti pick the host's address from the default route, as
on any real server. Its hostname is ``frakti-e2e`` (in /etc/hosts, as the
Debian installer writes it) and it has no DNS server.

Everything here runs as root on the host and only touches paths under
CACHE_ROOT and WORK_ROOT, and processes it started itself.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"

CACHE_ROOT = Path(os.environ.get("FRAKTI_E2E_CACHE", "/var/cache/frakti-install-e2e"))
WORK_ROOT = Path(os.environ.get("FRAKTI_E2E_WORK", "/var/tmp/frakti-install-e2e"))
# Where the diagnostics of the hosts of failed tests were copied (the summary lists them).
DIAGNOSTICS: list[Path] = []

SUITE = "bookworm"  # the default, and the only suite the frakti profile's tests boot
# Suites an image can be built of, from the same archive, and their pockets
# besides the release itself (sid has no -updates or -security suite).
SUITES = ("bookworm", "trixie", "sid")
POCKETS = {"bookworm": ("updates", "security"), "trixie": ("updates", "security"), "sid": ()}
# Names a Debian archive entry of the host may carry (its release, or a pocket of it).
DEBIAN_RELEASES = frozenset(
    {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid"}
    | {"oldoldstable", "oldstable", "stable", "testing", "unstable"}
)
# systemd 258 and later do not boot on cgroup v1 (sid has 262); this host is
# cgroup v1 hybrid, so these boot with a cgroup v2 hierarchy only.
UNIFIED_ONLY = frozenset({"sid"})
# Installed in the image: what a minimal Debian server has, plus what the
# harness itself needs (python3-venv to install the project, iproute2 for the
# network card).
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "python3",
    "python3-venv",
    "ca-certificates",
    "procps",
    "kmod",
    "iptables",
    "tmux",  # a real terminal, to send Ctrl-C as a user does (test_interrupts.py)
)
# Downloaded into apt's cache, not installed: the installer installs these.
# Recommends are downloaded too, so apt-get install works offline whether or
# not the installer passes --no-install-recommends.
# What a node needs on every suite (the kubelet packages depend on these) ...
NODE_PACKAGES = ("socat", "conntrack", "ebtables", "ethtool")
# ... and what the frakti profile adds: only its suite's image carries it.
FRAKTI_PACKAGES = ("docker.io", "qemu-system-x86", "containernetworking-plugins")
OFFLINE_PACKAGES = FRAKTI_PACKAGES + NODE_PACKAGES
HOSTNAME = "frakti-e2e"
NIC = {"name": "eth0", "address": "10.0.2.15/24", "gateway": "10.0.2.2"}
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "SHELL": "/bin/bash",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}
MIRROR_PORT = 8080
MIRROR_URL = f"http://127.0.0.1:{MIRROR_PORT}"


class TestbedError(RuntimeError):
    """The test bed itself failed (not the software under test)."""


# --------------------------------------------------------------------------
# small host helpers


def _run_host(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    timeout: float = 1800,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a command on the host; raise TestbedError with its output tail on failure."""
    proc = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        env=dict(env) if env is not None else None,
    )
    out = proc.stdout.decode(errors="replace")
    if log is not None:
        with open(log, "a") as fh:
            fh.write(f"$ {' '.join(argv)}\n{out}\n")
    if proc.returncode != 0:
        tail = "\n".join(out.splitlines()[-30:])
        raise TestbedError(
            f"host command failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}"
        )
    return out


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every mount the host sees."""
    rows = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            point = left.split()[4].replace("\\040", " ")
            fstype, _source, sopts = (right.split() + ["", "", ""])[:3]
            rows.append((point, fstype, sopts))
    return rows


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    return [p for p, _, _ in _mountinfo() if p == str(path) or p.startswith(prefix)]


def _unmount_all_under(path: Path) -> None:
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    left = _mounts_under(path)
    if left:
        raise TestbedError(f"could not unmount {left}")


def remove_tree(path: Path) -> None:
    """rm -rf that never crosses into a mount (first unmounting what is under it)."""
    if not path.exists():
        return
    _unmount_all_under(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def _pid_alive(pid: int, starttime: str | None = None) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if starttime is None:
        return True
    return stat.rsplit(")", 1)[1].split()[19] == starttime


def _starttime(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(x) for x in (task / "children").read_text().split()]
    return kids


# --------------------------------------------------------------------------
# can this machine run the tests at all?


def host_problem() -> str | None:
    """None when the e2e tests can run here, else the reason to skip them."""
    if not sys.platform.startswith("linux"):
        return "end-to-end tests need Linux (they boot a container with systemd-nspawn)"
    if os.geteuid() != 0:
        return "end-to-end tests need root (systemd-nspawn, overlay mounts, nsenter)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "end-to-end tests need overlayfs, which this kernel lacks"
    wanted = {"systemd-nspawn": "systemd-container", "debootstrap": "debootstrap"}
    missing = [pkg for exe, pkg in wanted.items() if shutil.which(exe) is None]
    if missing:
        if shutil.which("apt-get") is None:
            return (
                f"end-to-end tests need {', '.join(missing)} and there is no apt-get "
                "to install them"
            )
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", *missing]
        try:
            if subprocess.run(install, capture_output=True, env=env).returncode != 0:
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
                proc = subprocess.run(install, capture_output=True, env=env)
                if proc.returncode != 0:
                    return (
                        f"could not install {', '.join(missing)} with apt-get: "
                        + proc.stderr.decode(errors="replace")[-500:]
                    )
        except OSError as exc:
            return f"could not run apt-get to install {', '.join(missing)}: {exc}"
    for exe in ("systemd-nspawn", "debootstrap", "nsenter", "dpkg-deb"):
        if shutil.which(exe) is None:
            return f"end-to-end tests need {exe}, which is not on PATH"
    return None


# --------------------------------------------------------------------------
# the image


def _parse_sources() -> list[dict[str, list[str]]]:
    """The host's apt sources as a list of {Types, URIs, Suites, Components, Signed-By}."""
    entries: list[dict[str, list[str]]] = []
    d = Path("/etc/apt/sources.list.d")
    for f in sorted(d.glob("*.sources")) if d.is_dir() else []:
        for para in re.split(r"\n\s*\n", f.read_text()):
            fields: dict[str, list[str]] = {}
            for line in para.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip()] = value.split()
            enabled = fields.get("Enabled", ["yes"])[0] != "no"
            if fields.get("URIs") and fields.get("Suites") and enabled:
                entries.append(fields)
    lists = [Path("/etc/apt/sources.list")]
    lists += sorted(d.glob("*.list")) if d.is_dir() else []
    for f in lists:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb":
                entries.append(
                    {
                        "Types": ["deb"],
                        "URIs": [line[1]],
                        "Suites": [line[2]],
                        "Components": line[3:],
                    }
                )
    return entries


def _retarget(suites: list[str], suite: str) -> list[str]:
    """The host entry's Debian suites as `suite`'s: bookworm -> trixie,
    bookworm-security -> trixie-security; a pocket `suite` lacks is dropped."""
    out = []
    for name in suites:
        release, _, pocket = name.partition("-")
        if release not in DEBIAN_RELEASES:
            continue
        if not pocket:
            out.append(suite)
        elif pocket in POCKETS[suite]:
            out.append(f"{suite}-{pocket}")
    return list(dict.fromkeys(out))


def debian_sources(suite: str = SUITE) -> list[dict[str, list[str]]]:
    """The host's Debian archive entries (release, updates, security), their
    suites renamed to `suite`'s: the same mirror serves every Debian suite."""
    if suite not in POCKETS:
        raise TestbedError(f"unknown Debian suite {suite!r} (known: {', '.join(SUITES)})")
    found = []
    for entry in _parse_sources():
        if "deb" not in entry.get("Types", ["deb"]):
            continue
        suites = _retarget(entry["Suites"], suite)
        if suites:
            found.append({**entry, "Suites": suites})
    if not any(suite in e["Suites"] for e in found):
        raise TestbedError(
            "no apt source for a Debian release in /etc/apt/sources.list(.d): "
            f"the {suite} image is built from the archive the host already uses"
        )
    return found


def debian_mirror(suite: str = SUITE) -> str:
    for entry in debian_sources(suite):
        if suite in entry["Suites"]:
            return entry["URIs"][0]
    raise AssertionError("unreachable")


def host_apt_date_checks() -> str:
    """This machine's apt settings for Release file dates, as apt.conf lines."""
    names = ("Acquire::Check-Valid-Until", "Acquire::Check-Date")
    dumped = subprocess.run(["apt-config", "dump", *names], capture_output=True, text=True)
    return "".join(
        line + "\n" for line in dumped.stdout.splitlines() if line.split(" ", 1)[0] in names
    )


def _customize_image(
    root: Path, sources: list[dict[str, list[str]]], offline: Sequence[str], log: Path
) -> None:
    """Everything done to the debootstrapped tree; its source is part of the cache key."""
    # apt sources: the host's Debian entries for this suite, in deb822 form
    # (read by apt in every suite; debootstrap leaves a one-line sources.list).
    paras = []
    for e in sources:
        lines = [
            "Types: deb",
            f"URIs: {' '.join(e['URIs'])}",
            f"Suites: {' '.join(e['Suites'])}",
            f"Components: {' '.join(e.get('Components') or ['main'])}",
        ]
        signed = e.get("Signed-By")
        if signed and (root / signed[0].lstrip("/")).exists():
            lines.append(f"Signed-By: {signed[0]}")
        paras.append("\n".join(lines))
    (root / "etc/apt/sources.list.d/debian.sources").write_text("\n\n".join(paras) + "\n")
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    # Keep every .deb apt fetches, and make sure no clean hook deletes them.
    (root / "etc/apt/apt.conf.d/docker-clean").unlink(missing_ok=True)
    (root / "etc/apt/apt.conf.d/10keep-downloaded-debs").write_text(
        'APT::Keep-Downloaded-Packages "true";\n'
        'Binary::apt::APT::Keep-Downloaded-Packages "true";\n'
    )
    # The image's apt judges the mirror's Release dates as this machine's apt does:
    # a machine whose mirror is a snapshot turns the date checks off, and sid's
    # Release (Valid-Until a week ahead) is then "expired" to an image that keeps
    # them. The signatures are checked either way.
    (root / "etc/apt/apt.conf.d/10mirror-dates").write_text(host_apt_date_checks())
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")  # the chroot uses the host's network
    chroot_apt(root, log, "update", "-q")
    download_into_cache(root, log, offline)
    debs = list((root / "var/cache/apt/archives").glob("*.deb"))
    if len(debs) < len(offline):
        raise TestbedError(f"apt left only {len(debs)} .debs in the image's cache")
    # The booted host has no DNS server: lookups fail at once instead of hanging.
    (root / "etc/resolv.conf").write_text(
        "# frakti-install e2e test host: no DNS server (offline)\nnameserver 127.0.0.1\n"
    )
    (root / "etc/hostname").write_text(HOSTNAME + "\n")
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
    # Each boot gets its own transient machine id.
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    # No background apt runs racing the installer for the dpkg lock.
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def offline_packages(suite: str) -> tuple[str, ...]:
    """What the image of `suite` holds in apt's cache (only bookworm's: frakti's too)."""
    return OFFLINE_PACKAGES if suite == SUITE else NODE_PACKAGES


def image_recipe(suite: str = SUITE) -> dict[str, object]:
    return {
        "suite": suite,
        "variant": "minbase",
        "mirror": debian_mirror(suite),
        "sources": debian_sources(suite),
        "include": BASE_PACKAGES,
        "download_only": offline_packages(suite),
        "hostname": HOSTNAME,
        "customize": _code_of(_customize_image, chroot_apt, download_into_cache),
    }


def _code_of(*functions: Callable[..., object]) -> str:
    """The code, not its formatting or comments: cosmetic edits keep a cached image."""
    return "".join(ast.dump(ast.parse(textwrap.dedent(inspect.getsource(f)))) for f in functions)


RECIPE_FILE = "etc/frakti-e2e-image.json"


def recipe_of(image: Path) -> dict:
    """The recipe a cached base image (or a copy of it) was built from: its suite,
    the packages in its apt cache..."""
    return json.loads((image / RECIPE_FILE).read_text())


def image_suite(image: Path) -> str:
    """The Debian suite of a cached image (images older than the suite key: bookworm)."""
    try:
        return str(recipe_of(image).get("suite") or SUITE)
    except FileNotFoundError:
        return SUITE


def image_python(image: Path) -> str:
    """The image's python3 as MAJOR.MINOR (3.11 in bookworm, 3.13 in trixie...)."""
    target = os.readlink(image / "usr/bin/python3")  # python3.13
    found = re.fullmatch(r"python(3\.\d+)", Path(target).name)
    if not found:
        raise TestbedError(f"{image}: /usr/bin/python3 points to {target!r}")
    return found.group(1)


def ensure_image(suite: str = SUITE) -> Path:
    """Path of the cached image of `suite`, building it first when its recipe is
    new (1-2 min). Each suite has its own image; building one keeps the others."""
    recipe = image_recipe(suite)
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    image = CACHE_ROOT / f"image-{suite}-{key}"
    if image.is_dir():
        return image
    with _flock(CACHE_ROOT / ".build.lock"):
        if image.is_dir():
            return image
        for stale in CACHE_ROOT.glob("image-*.tmp-*"):  # a killed build: never reused
            remove_tree(stale)
        tmp = CACHE_ROOT / f"image-{key}.tmp-{os.getpid()}"
        log = CACHE_ROOT / f"build-{key}.log"
        log.write_text("")
        try:
            _run_host(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    suite,
                    str(tmp),
                    str(recipe["mirror"]),
                ],
                log=log,
                timeout=1800,
            )
            _unmount_all_under(tmp)
            _customize_image(tmp, debian_sources(suite), offline_packages(suite), log)
            (tmp / RECIPE_FILE).write_text(json.dumps(recipe, indent=1) + "\n")
            os.rename(tmp, image)
        except BaseException:
            remove_tree(tmp)
            raise
        _remove_unused_images(keep=image, suite=suite)
    return image


def _in_use() -> str:
    """The options of every overlay mount: a cached image named there is booted."""
    return " ".join(sopts for _, fstype, sopts in _mountinfo() if fstype == "overlay")


def _remove_unused_images(keep: Path, suite: str) -> None:
    """Drop older images of `suite` (other suites' images stay) that no running
    overlay uses as its lower dir, and derived images whose base is gone."""
    in_use = _in_use()
    for old in CACHE_ROOT.glob("image-*"):
        if old == keep or ".tmp-" in old.name or not old.is_dir() or str(old) in in_use:
            continue
        try:
            old_suite = recipe_of(old).get("suite")
        except (OSError, ValueError):
            old_suite = None  # no recipe: a broken build, never reusable
        if old_suite in (suite, None):
            remove_tree(old)
            (CACHE_ROOT / f"build-{old.name[len('image-') :]}.log").unlink(missing_ok=True)
    _remove_orphaned_derived_images(in_use)


def _remove_orphaned_derived_images(in_use: str) -> None:
    """A derived image's cache key names its base: once the base is gone it can
    never be reused."""
    for old in CACHE_ROOT.iterdir():
        if old.name.startswith("image-") or ".tmp-" in old.name or not old.is_dir():
            continue
        recipes = sorted(old.glob("etc/frakti-e2e-*-image.json"))
        if not recipes or str(old) in in_use:
            continue
        try:
            base = json.loads(recipes[0].read_text()).get("base")
        except (OSError, ValueError):
            continue
        if base and not (CACHE_ROOT / base).is_dir():
            remove_tree(old)


# --------------------------------------------------------------------------- derived images
CHROOT_ENV = {
    "PATH": CONTAINER_ENV["PATH"],
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


def chroot_apt(root: Path, log: Path, *args: str, timeout: float = 900) -> None:
    """apt-get ARGS inside the image tree (for derived images' customize)."""
    _run_host(["chroot", str(root), "apt-get", *args], log=log, env=CHROOT_ENV, timeout=timeout)


def download_into_cache(root: Path, log: Path, packages: Sequence[str]) -> None:
    """Fetch `packages` into the image's apt cache, for the offline booted host."""
    chroot_apt(root, log, "install", "--download-only", "-y", "-q", *packages, timeout=1800)


@contextlib.contextmanager
def host_network(root: Path) -> Iterator[None]:
    """The image's chroot resolves names as this machine does, until the block
    ends; then the booted host's offline resolv.conf is back."""
    resolv = root / "etc/resolv.conf"
    offline = resolv.read_bytes()
    resolv.unlink()
    shutil.copy("/etc/resolv.conf", resolv)
    try:
        yield
    finally:
        resolv.unlink()
        resolv.write_bytes(offline)


def derived_image(
    prefix: str, base: Path, recipe: dict, customize: Callable[[Path, Path], None]
) -> Path:
    """A cached copy of `base` changed by customize(root, log), rebuilt when the
    recipe (which should hold customize's source) changes. Built into a temp
    dir and renamed, so a killed build is never reused; older copies that no
    running host uses are dropped."""
    helpers = _code_of(chroot_apt, download_into_cache, host_network)
    recipe = {"base": base.name, "helpers": helpers, **recipe}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    image = CACHE_ROOT / f"{prefix}-{key}"
    if image.is_dir():
        return image
    with _flock(CACHE_ROOT / ".build.lock"):
        if image.is_dir():
            return image
        for stale in CACHE_ROOT.glob(f"{prefix}-*.tmp-*"):  # a killed build
            remove_tree(stale)
        tmp = CACHE_ROOT / f"{prefix}-{key}.tmp-{os.getpid()}"
        log = CACHE_ROOT / f"build-{prefix}-{key}.log"
        log.write_text("")
        try:
            _run_host(["cp", "-a", "--reflink=auto", str(base), str(tmp)], log=log)
            customize(tmp, log)
            (tmp / f"etc/frakti-e2e-{prefix}-image.json").write_text(json.dumps(recipe, indent=1))
            os.rename(tmp, image)
        except BaseException:
            remove_tree(tmp)
            raise
        in_use = _in_use()
        same = re.compile(re.escape(prefix) + r"-[0-9a-f]{16}")  # not kata-sid-... for kata
        for old in CACHE_ROOT.glob(f"{prefix}-*"):
            if old != image and same.fullmatch(old.name) and str(old) not in in_use:
                remove_tree(old)
    return image


# --------------------------------------------------------------------------
# a work directory per pytest run, and the leftovers of crashed runs


def new_run_dir() -> Path:
    """A fresh work directory for this run, after clearing those of dead runs."""
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    cleanup_stale_runs()
    # Appears with its owner file in place, so another session never sees it ownerless.
    tmp = WORK_ROOT / f".new-run-{os.getpid()}"
    tmp.mkdir()
    (tmp / "owner").write_text(f"{os.getpid()} {_starttime(os.getpid())}\n")
    run = WORK_ROOT / f"run-{os.getpid()}-{int(time.time())}"
    os.rename(tmp, run)
    return run


def cleanup_stale_runs() -> None:
    for run in [*WORK_ROOT.glob("run-*"), *WORK_ROOT.glob(".new-run-*")]:
        try:
            pid, start = (run / "owner").read_text().split()
            if _pid_alive(int(pid), start):
                continue
        except (OSError, ValueError):
            pass
        # Containers of that run still alive: stop them by their recorded PIDs.
        for pidfile in run.glob("*/nspawn.pid"):
            try:
                pid, start = pidfile.read_text().split()
            except (OSError, ValueError):
                continue
            if _pid_alive(int(pid), start):
                for child in _children(int(pid)):
                    os.kill(child, signal.SIGKILL)
                os.kill(int(pid), signal.SIGKILL)
                for _ in range(50):
                    if not _pid_alive(int(pid), start):
                        break
                    time.sleep(0.1)
        _swapoff_under(run)
        remove_tree(run)


def _swapoff_under(path: Path) -> None:
    for line in Path("/proc/swaps").read_text().splitlines()[1:]:
        name = line.split()[0]
        if name.startswith(str(path) + "/"):
            subprocess.run(["swapoff", name], capture_output=True)


# --------------------------------------------------------------------------
# a booted machine


class Machine:
    """One booted container: a fresh overlay over the image, systemd as PID 1."""

    def __init__(self, image: Path, workdir: Path, name: str, cgroup_v2: bool = False) -> None:
        self.image = image
        self.cgroup_v2 = cgroup_v2
        self.dir = workdir
        self.name = name
        self.merged = workdir / "merged"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # the container's systemd, as the host sees it
        self.console = workdir / "console.log"
        self.boot_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------

    def boot(self, timeout: float = 60) -> Machine:
        started = time.monotonic()
        upper, work, docker = self.dir / "upper", self.dir / "work", self.dir / "var-lib-docker"
        for d in (upper, work, self.merged, docker):
            d.mkdir(parents=True)
        subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={self.image},upperdir={upper},workdir={work}",
                str(self.merged),
            ],
            check=True,
            capture_output=True,
        )
        argv = [
            "systemd-nspawn",
            "--register=no",
            "--keep-unit",
            "--capability=all",
            "--private-network",
            # runc joins a session keyring and attaches its device filter
            # with bpf; nspawn's default seccomp filter refuses both
            "--system-call-filter=@keyring bpf",
            "-M",
            self.name,
            "-D",
            str(self.merged),
            # docker's overlay2 driver does not work on top of overlayfs
            f"--bind={docker}:/var/lib/docker",
            "-b",
            "--console=pipe",
        ]
        env = dict(os.environ)
        env.pop("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", None)
        if self.cgroup_v2:
            # nspawn mounts a cgroup2 hierarchy for the container on this cgroup v1
            # hybrid host (no controllers are delegated to it here)
            env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        with open(self.console, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (self.dir / "nspawn.pid").write_text(f"{self.proc.pid} {_starttime(self.proc.pid)}\n")
        deadline = time.monotonic() + timeout
        self.pid = self._wait_for_init(deadline)
        state = ""
        while time.monotonic() < deadline:
            state = self.run(
                ["systemctl", "is-system-running"], check=False, timeout=10
            ).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.3)
        else:
            raise TestbedError(
                f"{self.name}: systemd still {state!r} after {timeout}s\n{self.console_tail()}"
            )
        self._plug_network_card()
        self.boot_seconds = time.monotonic() - started
        return self

    def _wait_for_init(self, deadline: float) -> int:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TestbedError(
                    f"{self.name}: systemd-nspawn exited {self.proc.returncode}\n"
                    + self.console_tail()
                )
            for child in _children(self.proc.pid):
                try:
                    if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                        return child
                except OSError:
                    pass
            time.sleep(0.1)
        raise TestbedError(
            f"{self.name}: no systemd inside after boot timeout\n{self.console_tail()}"
        )

    def _plug_network_card(self) -> None:
        nic = NIC["name"]
        self.run(
            [
                "sh",
                "-euc",
                f"""
            ip link add {nic} type veth peer name {nic}-peer
            ip link set {nic}-peer up
            ip addr add {NIC["address"]} dev {nic}
            ip link set {nic} up
            ip route add default via {NIC["gateway"]} dev {nic}
        """,
            ]
        )

    def stop(self) -> None:
        """Kill the container (its PID 1, then nspawn), unmount and delete its upper dir."""
        if self.proc is not None and self.proc.poll() is None:
            if self.pid is not None and _pid_alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)  # ends every process of the container
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        _swapoff_under(self.dir)
        remove_tree(self.dir)

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return ""
        return "--- container console ---\n" + "\n".join(text.splitlines()[-lines:])

    # -- commands ----------------------------------------------------------

    def _argv(self, argv: Sequence[str]) -> list[str]:
        if self.pid is None:
            raise TestbedError(f"{self.name} is not booted")
        return ["nsenter", "-t", str(self.pid), "-a", "-r", "-w", "--", *argv]

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        return {**CONTAINER_ENV, **(env or {})}

    def popen(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        stdout: object = subprocess.PIPE,
        stderr: object = subprocess.PIPE,
    ) -> subprocess.Popen[bytes]:
        """Start a command inside (``kill_tree`` ends it and everything it started)."""
        return subprocess.Popen(
            self._argv(argv),
            env=self._env(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )

    @staticmethod
    def kill_tree(proc: subprocess.Popen[bytes]) -> list[int]:
        """SIGKILL a popen()ed command and all its descendants; returns their host PIDs.

        A process-group kill is not enough: apt runs dpkg in a session of its own.
        Each process is stopped before its children are listed, so none can fork
        away in between. Services the command started through systemd are not
        its descendants and keep running, as after a real crash of the command.
        """
        seen: list[int] = []
        frontier = [proc.pid]
        while frontier:
            pid = frontier.pop()
            if pid in seen:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                seen.append(pid)
                frontier += _children(pid)
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return seen

    def run(
        self,
        argv: Sequence[str],
        check: bool = True,
        timeout: float = 600,
        env: Mapping[str, str] | None = None,
        input: bytes | str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside; stdout and stderr are returned as text."""
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.Popen(
            self._argv(argv),
            env=self._env(env),
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree(proc)
            out, err = proc.communicate()
            raise TestbedError(
                f"{self.name}: timed out after {timeout}s: {' '.join(argv)}\n"
                f"stdout: {out.decode(errors='replace')[-3000:]}\n"
                f"stderr: {err.decode(errors='replace')[-3000:]}"
            ) from None
        result = subprocess.CompletedProcess(
            list(argv), proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if check and result.returncode != 0:
            raise TestbedError(
                f"{self.name}: exit {result.returncode}: {' '.join(argv)}\n"
                f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"
            )
        return result

    def write(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Write a file inside (through the container's own mounts), creating parents."""
        self.run(
            [
                "sh",
                "-ec",
                'mkdir -p "$(dirname "$1")"; cat > "$1"; chmod "$2" "$1"',
                "sh",
                path,
                format(mode, "o"),
            ],
            input=data,
        )

    def read(self, path: str) -> bytes:
        proc = subprocess.run(
            self._argv(["cat", path]),
            env=self._env(None),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        if proc.returncode != 0:
            raise FileNotFoundError(
                f"{self.name}:{path}: {proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).returncode == 0

    def path(self, p: str) -> Path:
        """Host path of a file inside; valid for the root file system (not /run, /tmp, /proc)."""
        return self.merged / p.lstrip("/")

    # -- systemd helpers ---------------------------------------------------

    def is_active(self, unit: str) -> bool:
        return self.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0

    def unit_props(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(["systemctl", "show", unit, *[f"--property={p}" for p in props]]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(
        self, argv: Sequence[str], timeout: float = 30, interval: float = 0.5
    ) -> subprocess.CompletedProcess[str]:
        """Run argv until it exits 0; return that result or raise with the last one."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.run(argv, check=False)
            if result.returncode == 0:
                return result
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"{self.name}: still failing after {timeout}s: {' '.join(argv)}\n"
                    f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
                )
            time.sleep(interval)

    def tcp_open(self, port: int, host: str = "127.0.0.1") -> bool:
        code = (
            "import socket,sys\ns=socket.socket()\ns.settimeout(2)\n"
            "sys.exit(s.connect_ex((sys.argv[1], int(sys.argv[2]))))"
        )
        return self.run(["python3", "-c", code, host, str(port)], check=False).returncode == 0

    def wait_tcp(self, port: int, host: str = "127.0.0.1", timeout: float = 30) -> None:
        code = (
            "import socket,sys,time\nend=time.time()+float(sys.argv[3])\n"
            "while time.time()<end:\n"
            "    s=socket.socket(); s.settimeout(1)\n"
            "    if s.connect_ex((sys.argv[1], int(sys.argv[2])))==0: sys.exit(0)\n"
            "    s.close(); time.sleep(0.2)\n"
            "sys.exit(1)"
        )
        if (
            self.run(
                ["python3", "-c", code, host, str(port), str(timeout)],
                check=False,
                timeout=timeout + 30,
            ).returncode
            != 0
        ):
            raise TestbedError(f"{self.name}: nothing listens on {host}:{port} after {timeout}s")


def boot_machine(
    image: Path, run_dir: Path, name: str, timeout: float = 60, cgroup_v2: bool = False
) -> Machine:
    """Boot a fresh machine; on a failed boot it is torn down before raising.
    An image of a suite in UNIFIED_ONLY always boots with cgroup v2."""
    cgroup_v2 = cgroup_v2 or image_suite(image) in UNIFIED_ONLY
    machine = Machine(image, run_dir / name, name, cgroup_v2)
    try:
        return machine.boot(timeout)
    except BaseException:
        machine.stop()
        raise


# --------------------------------------------------------------------------
# the stand-in download mirror


def _load_builder():
    spec = importlib.util.spec_from_file_location(
        "frakti_e2e_standins_build", STANDINS / "build.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_mirror(dest: Path) -> dict[str, object]:
    """Lay the stand-ins out like upstream under dest; returns versions, sha256 sums, paths."""
    return _load_builder().build(dest)


def serve_mirror(machine: Machine, mirror_dir: Path) -> str:
    """Copy the mirror into /srv/mirror and serve it on 127.0.0.1:8080; returns its base URL."""
    shutil.copytree(mirror_dir, machine.path("/srv/mirror"), symlinks=True)
    machine.run(
        [
            "systemd-run",
            "--unit=standin-mirror",
            "--quiet",
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            str(MIRROR_PORT),
            "--directory",
            "/srv/mirror",
        ]
    )
    machine.wait_tcp(MIRROR_PORT)
    return MIRROR_URL


# --------------------------------------------------------------------------
# the project, installed without network


WHEEL_DEPS_PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_35_x86_64",
)


def build_wheelhouse(
    project_root: Path, dest: Path, log: Path, python_version: str = "3.11"
) -> Path:
    """Build the project wheel and fetch its dependency wheels for the image's
    CPython (image_python: 3.11 in bookworm, 3.13 in trixie, 3.14 in sid)."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run_host([*pip, "wheel", "--no-deps", "-w", str(dest), str(project_root)], log=log)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise TestbedError(f"expected one project wheel in {dest}, found {wheels}")
    platforms = [a for p in WHEEL_DEPS_PLATFORMS for a in ("--platform", p)]
    _run_host(
        [
            *pip,
            "download",
            "-d",
            str(dest),
            "--only-binary=:all:",
            "--python-version",
            python_version,
            "--implementation",
            "cp",
            *platforms,
            str(wheels[0]),
        ],
        log=log,
    )
    (dest / "PROJECT_WHEEL").write_text(wheels[0].name + "\n")
    return dest


def install_project(machine: Machine, wheelhouse: Path) -> None:
    """python3 -m venv /opt/frakti-install; pip install --no-index from /wheelhouse; link it."""
    shutil.copytree(wheelhouse, machine.path("/wheelhouse"))
    wheel = (wheelhouse / "PROJECT_WHEEL").read_text().strip()
    env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    machine.run(["python3", "-m", "venv", "/opt/frakti-install"])
    machine.run(
        [
            "/opt/frakti-install/bin/pip",
            "install",
            "--no-index",
            "--find-links",
            "/wheelhouse",
            f"/wheelhouse/{wheel}",
        ],
        env=env,
    )
    machine.run(
        ["ln", "-sf", "/opt/frakti-install/bin/frakti-install", "/usr/local/bin/frakti-install"]
    )
