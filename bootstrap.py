#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""Bootstrap frakti-install on a bare host, then run it.

    curl -sSL <url>/bootstrap.py | sudo python - allinone --yes
    curl -sSL <url>/bootstrap.py | sudo python - [bootstrap options] [--] [frakti-install args]
    sudo python bootstrap.py --bundle /tmp/b.tar.gz -- allinone --yes --bundle /tmp/b.tar.gz

This file runs under any Python from 2.7 and 3.5 on (CentOS 7 ships 2.7,
Ubuntu 16.04 ships 3.5): no f-strings, no annotations, no subprocess.run, no
pathlib. frakti-install itself needs Python >= 3.8; this script finds one (or
installs one from the OS's own repositories), makes a virtualenv with it, pip
installs frakti-install there, links the command onto PATH and finally runs
``frakti-install <args>`` (os.execv). Without args it stops after installing.
Running it again upgrades or repairs the install in place.

Where Python >= 3.8 comes from (decided from /etc/os-release, as root):

  | system                 | packages installed (and the interpreter used)            |
  |------------------------|----------------------------------------------------------|
  | CentOS 7               | yum install -y centos-release-scl                        |
  |                        | yum install -y rh-python38-python                        |
  |                        | -> /opt/rh/rh-python38/root/usr/bin/python3; its lib64   |
  |                        |    goes into /etc/ld.so.conf.d (no `scl enable` needed)  |
  |                        | CentOS 7 is EOL: if yum cannot reach mirror.centos.org,  |
  |                        | point /etc/yum.repos.d/*.repo at vault.centos.org first  |
  | RHEL 7                 | none (exit 3): enable rhel-server-rhscl-7-rpms with      |
  |                        | subscription-manager, yum install -y rh-python38-python  |
  | Rocky/Alma/RHEL 8      | dnf install -y python39        -> /usr/bin/python3.9     |
  | Rocky/Alma/RHEL 9      | dnf install -y python3         -> /usr/bin/python3 (3.9) |
  | Ubuntu 16.04           | none (exit 3): no Python >= 3.8 in the archive; install  |
  |                        | one yourself (e.g. from source into /usr/local) or pass  |
  |                        | --python PATH                                            |
  | Ubuntu 18.04           | apt-get install -y python3.8 python3.8-venv (universe)   |
  |                        |                                -> /usr/bin/python3.8     |
  | Ubuntu 20.04+,         | apt-get install -y python3 python3-venv                  |
  | Debian 11/12           |                                -> /usr/bin/python3       |
  | anything else          | none (exit 3): install Python >= 3.8, or --python PATH   |

  An interpreter already present is used first: --python PATH, then the one
  running this script (if >= 3.8), then python3.14 ... python3.8 and python3 on
  PATH, /usr/local/bin, /usr/bin and /opt/rh/*/root/usr/bin. If it lacks
  venv/ensurepip, its package is installed (Debian/Ubuntu: python3.X-venv;
  CentOS 7 SCL: rh-python38-python-pip; EL8: python39-pip; EL9: python3-pip).
  --no-install-python forbids any package installation (the advice is printed).

Where frakti-install comes from (pick one; the package index is the default):

  (default)          pip install --upgrade frakti-install   (--version X pins ==X)
  --from-url URL     a wheel or sdist over https:// (http:// only with --insecure-http)
  --from-path PATH   a local source tree, wheel or sdist
  --bundle PATH      an offline bundle, .tar.gz or directory, whose manifest.json
                     lists "wheels": ["wheels/<file>.whl", ...]; installed with
                     pip install --no-index --find-links <bundle>/wheels frakti-install

Other options:

  --pip-arg ARG          pass ARG to every pip install (repeatable), e.g.
                         --pip-arg=--index-url=https://mirror/simple --pip-arg=--no-deps
  --system-site-packages create the virtualenv with the interpreter's site-packages visible
  --python PATH          use this interpreter (must be >= 3.8)
  --prefix DIR           the virtualenv [env FRAKTI_INSTALL_PREFIX, default /opt/frakti-install]
  --bin-link PATH        the command link [env FRAKTI_INSTALL_BIN_LINK,
                         default /usr/local/bin/frakti-install]
  --no-install-python    never install OS packages; say what to install instead
  -h, --help             this text

Bootstrap options come first. The first argument that is not a bootstrap
option (or everything after ``--``) goes to frakti-install.

Exit codes (once frakti-install runs, its own exit codes apply):

  | code | meaning                                                              |
  |------|----------------------------------------------------------------------|
  | 0    | installed (and no frakti-install arguments were given)               |
  | 1    | internal error in this script (a bug)                                |
  | 2    | bad bootstrap command line (also: a non-https --from-url)            |
  | 3    | no Python >= 3.8 on this host and none could be installed            |
  | 4    | the virtualenv could not be created or repaired                      |
  | 5    | pip install of frakti-install failed                                 |
  | 6    | the --bundle is unreadable or its manifest.json is invalid           |
  | 7    | the frakti-install link could not be written                         |
  | 8    | frakti-install could not be started                                  |
  | 130  | interrupted                                                          |

Security: commands are argument lists (never a shell, never shell=True),
nothing downloaded is piped into an interpreter, --from-url must be https://.
"""

from __future__ import print_function

import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

MIN_PYTHON = (3, 8)
PACKAGE = "frakti-install"
DEFAULT_PREFIX = "/opt/frakti-install"
DEFAULT_BIN_LINK = "/usr/local/bin/frakti-install"
OS_RELEASE = "/etc/os-release"
PYTHON_NAMES = ["python3.%d" % minor for minor in range(14, 7, -1)] + ["python3"]
FIXED_DIRS = ["/usr/local/bin", "/usr/bin"]
SCL_GLOB = "/opt/rh/rh-python3*/root/usr/bin"
RHEL_IDS = ("rhel", "centos", "rocky", "almalinux", "ol")

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_NO_PYTHON = 3
EXIT_VENV = 4
EXIT_PIP = 5
EXIT_BUNDLE = 6
EXIT_LINK = 7
EXIT_EXEC = 8
EXIT_INTERRUPTED = 130

# Printed by the candidate interpreter, which may be any Python (even 2.x).
PROBE = (
    "import sys\n"
    "ok = 1\n"
    "try:\n"
    "    import venv, ensurepip\n"
    "except Exception:\n"
    "    ok = 0\n"
    "sys.stdout.write('%d.%d.%d %d' % (sys.version_info[0], sys.version_info[1],"
    " sys.version_info[2], ok))\n"
)
HEALTH = "import sys, pip; sys.exit(0 if sys.version_info >= (3, 8) else 1)"


class BootstrapError(Exception):
    def __init__(self, code, message, hint=None):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.hint = hint


class Options(object):
    def __init__(self):
        self.version = None
        self.from_url = None
        self.from_path = None
        self.bundle = None
        self.insecure_http = False
        self.pip_args = []
        self.system_site_packages = False
        self.python = None
        self.prefix = None
        self.bin_link = None
        self.install_python = True
        self.help = False
        self.args = []


def say(message):
    print("[bootstrap] " + message, file=sys.stderr)
    sys.stderr.flush()


def quote(arg):
    safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_"
    if arg and all(ch in safe for ch in arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def show(argv):
    return " ".join(quote(a) for a in argv)


# ---------------------------------------------------------------- command line

VALUE_OPTIONS = {
    "--version": "version",
    "--from-url": "from_url",
    "--from-path": "from_path",
    "--bundle": "bundle",
    "--python": "python",
    "--prefix": "prefix",
    "--bin-link": "bin_link",
}
FLAG_OPTIONS = {
    "--insecure-http": "insecure_http",
    "--system-site-packages": "system_site_packages",
}


def parse_args(argv, environ=None):
    """[bootstrap options] [--] [frakti-install args] -> Options (BootstrapError on misuse)."""
    environ = os.environ if environ is None else environ
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            opts.args = list(argv[i + 1:])
            break
        if not arg.startswith("-") or arg == "-":
            opts.args = list(argv[i:])
            break
        name, has_value, value = arg.partition("=")
        if name in ("-h", "--help"):
            opts.help = True
        elif name == "--no-install-python":
            opts.install_python = False
        elif name in FLAG_OPTIONS and not has_value:
            setattr(opts, FLAG_OPTIONS[name], True)
        elif name in VALUE_OPTIONS or name == "--pip-arg":
            if not has_value:
                if i + 1 >= len(argv):
                    raise BootstrapError(EXIT_USAGE, "option %s needs a value" % name)
                i += 1
                value = argv[i]
            if not value:
                raise BootstrapError(EXIT_USAGE, "option %s needs a non-empty value" % name)
            if name == "--pip-arg":
                opts.pip_args.append(value)
            else:
                setattr(opts, VALUE_OPTIONS[name], value)
        else:
            raise BootstrapError(
                EXIT_USAGE,
                "unknown bootstrap option %s" % arg,
                "Bootstrap options come first; put frakti-install's own options after "
                "'--', e.g. python - --bundle B.tar.gz -- allinone --yes. See --help.",
            )
        i += 1

    sources = [n for n in ("from_url", "from_path", "bundle") if getattr(opts, n)]
    if len(sources) > 1:
        raise BootstrapError(
            EXIT_USAGE,
            "choose one source: " + ", ".join("--" + s.replace("_", "-") for s in sources),
        )
    if opts.version and (opts.from_url or opts.from_path):
        raise BootstrapError(
            EXIT_USAGE, "--version applies to the package index or a --bundle, not a URL or path"
        )
    if opts.from_url:
        lowered = opts.from_url.lower()
        if lowered.startswith("http://"):
            if not opts.insecure_http:
                raise BootstrapError(
                    EXIT_USAGE,
                    "refusing to install from %s: not https://" % opts.from_url,
                    "Use an https:// URL, or add --insecure-http if you really trust the network.",
                )
        elif not lowered.startswith("https://"):
            raise BootstrapError(
                EXIT_USAGE,
                "--from-url must be an https:// URL, not %s" % opts.from_url,
                "For a local file or directory use --from-path PATH.",
            )
    opts.prefix = os.path.abspath(
        opts.prefix or environ.get("FRAKTI_INSTALL_PREFIX") or DEFAULT_PREFIX
    )
    opts.bin_link = os.path.abspath(
        opts.bin_link or environ.get("FRAKTI_INSTALL_BIN_LINK") or DEFAULT_BIN_LINK
    )
    if opts.from_path:
        opts.from_path = os.path.abspath(opts.from_path)
    if opts.bundle:
        opts.bundle = os.path.abspath(opts.bundle)
    return opts


# ------------------------------------------------------------------- processes


def run(argv, env=None):
    """Run an argument list (never a shell); its stdout goes to our stderr. -> exit code."""
    say("+ " + show(argv))
    devnull = open(os.devnull, "rb")
    try:
        return subprocess.call(argv, stdin=devnull, stdout=sys.stderr.fileno(), env=env)
    except OSError as exc:
        say("cannot run %s: %s" % (argv[0], exc.strerror or exc))
        return 127
    finally:
        devnull.close()


def capture(argv, env=None):
    """-> (exit code, stdout text); stderr is discarded; never raises for a missing program."""
    devnull = open(os.devnull, "r+b")
    try:
        proc = subprocess.Popen(
            argv, stdin=devnull, stdout=subprocess.PIPE, stderr=devnull, env=env
        )
        out = proc.communicate()[0]
    except OSError:
        return 127, ""
    finally:
        devnull.close()
    if not isinstance(out, str):
        out = out.decode("utf-8", "replace")
    return proc.returncode, out


def is_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


# ------------------------------------------------------------------ os-release


def read_os_release(path=OS_RELEASE):
    """KEY=value lines of /etc/os-release -> dict ({} if unreadable)."""
    data = {}
    try:
        handle = open(path, "rb")
    except (IOError, OSError):
        return data
    try:
        text = handle.read().decode("utf-8", "replace")
    finally:
        handle.close()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        data[key.strip()] = value.replace('\\"', '"').replace("\\\\", "\\")
    return data


def _major_minor(version_id):
    parts = (version_id or "").split(".")
    try:
        major = int(parts[0])
    except ValueError:
        return None, None
    try:
        minor = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        minor = 0
    return major, minor


def os_family(osr):
    """-> (family, os id, major, minor); family is 'rhel', 'debian' or None."""
    os_id = osr.get("ID", "").lower()
    like = osr.get("ID_LIKE", "").lower().split()
    major, minor = _major_minor(osr.get("VERSION_ID", ""))
    if os_id in RHEL_IDS or "rhel" in like or "centos" in like:
        return "rhel", os_id, major, minor
    if os_id in ("debian", "ubuntu") or "debian" in like or "ubuntu" in like:
        return "debian", os_id, major, minor
    return None, os_id, major, minor


APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def python_install_plan(osr):
    """How this OS's own repositories provide Python >= 3.8.

    -> (list of argv lists, None) or (None, advice when there is no such package).
    """
    family, os_id, major, minor = os_family(osr)
    name = osr.get("PRETTY_NAME") or ("%s %s" % (os_id, osr.get("VERSION_ID", ""))).strip()
    build_advice = (
        "Install Python >= 3.8 yourself (for example build CPython from python.org: "
        "./configure --prefix=/usr/local && make && make altinstall) and run this again; "
        "it is found on PATH, in /usr/local/bin, or give it with --python PATH."
    )
    if family == "rhel":
        if major == 7 and os_id == "centos":
            return [
                ["yum", "install", "-y", "centos-release-scl"],
                ["yum", "install", "-y", "rh-python38-python"],
            ], None
        if major == 7:
            return None, (
                "%s has Python 3.8 only in Red Hat Software Collections: run "
                "'subscription-manager repos --enable rhel-server-rhscl-7-rpms' and "
                "'yum install -y rh-python38-python', then run this again." % name
            )
        if major == 8:
            return [["dnf", "install", "-y", "python39"]], None
        if major is not None and major >= 9:
            return [["dnf", "install", "-y", "python3"]], None
    elif family == "debian" and os_id == "ubuntu":
        if (major, minor) < (18, 4) and major is not None:
            return None, (
                "%s has no Python >= 3.8 in its archive (its python3 is 3.5). %s"
                % (name, build_advice)
            )
        if (major, minor) < (20, 4):
            return [
                ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "python3.8", "python3.8-venv"],
            ], None
        return [
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "python3", "python3-venv"],
        ], None
    elif family == "debian" and os_id == "debian" and major is not None and major >= 11:
        return [
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "python3", "python3-venv"],
        ], None
    return None, "%s: no known package with Python >= 3.8. %s" % (
        name or "this system", build_advice
    )


def venv_package_plan(osr, python, version):
    """The OS package that adds venv/ensurepip to `python` -> list of argv lists or None."""
    family, os_id, major, _ = os_family(osr)
    if family == "debian":
        return [
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "python%d.%d-venv" % version[:2]],
        ]
    if family == "rhel":
        if python.startswith("/opt/rh/"):
            scl = python.split("/")[3]
            return [["yum", "install", "-y", scl + "-python-pip"]]
        if major == 8:
            return [["dnf", "install", "-y", "python%d%d-pip" % version[:2]]]
        if major is not None and major >= 9:
            return [["dnf", "install", "-y", "python3-pip"]]
    return None


def run_plan(plan, what):
    env = dict(os.environ)
    env.update(APT_ENV)
    for argv in plan:
        code = run(argv, env=env)
        if code != 0 and argv[:2] == ["apt-get", "update"]:
            say("apt-get update failed (exit %d); trying the install anyway" % code)
        elif code != 0:
            raise BootstrapError(
                EXIT_NO_PYTHON,
                "installing %s failed: %s exited with %d" % (what, show(argv), code),
                "Fix the package manager (network, repositories) and run this again.",
            )


# ------------------------------------------------------------- finding Python


def candidate_paths(path_env=None, fixed_dirs=None, scl_glob=SCL_GLOB):
    """Interpreters to try, best first (newest versioned names, then python3)."""
    path_env = os.environ.get("PATH", "") if path_env is None else path_env
    dirs = [d for d in path_env.split(os.pathsep) if d]
    dirs += FIXED_DIRS if fixed_dirs is None else fixed_dirs
    dirs += sorted(glob.glob(scl_glob), reverse=True) if scl_glob else []
    seen = set()
    result = []
    for name in PYTHON_NAMES:
        for directory in dirs:
            path = os.path.join(directory, name)
            if path in seen or not os.path.isfile(path) or not os.access(path, os.X_OK):
                continue
            seen.add(path)
            result.append(path)
    return result


def scl_env(python):
    """Software-collection Pythons need their lib64 on the loader path -> env or None."""
    if not python.startswith("/opt/rh/"):
        return None
    root = python.split("/usr/bin/")[0]
    env = dict(os.environ)
    lib = os.path.join(root, "usr", "lib64")
    if env.get("LD_LIBRARY_PATH"):
        lib += os.pathsep + env["LD_LIBRARY_PATH"]
    env["LD_LIBRARY_PATH"] = lib
    return env


def probe(python):
    """-> (version tuple, has venv+ensurepip, needs the SCL library path) or None."""
    envs = [None]
    if scl_env(python) is not None:
        envs.append(scl_env(python))
    for env in envs:
        code, out = capture([python, "-E", "-s", "-c", PROBE], env=env)
        fields = out.split()
        if code != 0 or len(fields) != 2:
            continue
        try:
            version = tuple(int(p) for p in fields[0].split("."))
        except ValueError:
            return None
        return version, fields[1] == "1", env is not None
    return None


def under(path, directory):
    path, directory = os.path.abspath(path), os.path.abspath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def inside(path, directory):
    """Like under(), after resolving symlinks."""
    return under(os.path.realpath(path), os.path.realpath(directory))


def find_python(candidates, exclude_dir=None):
    """-> (path, version, venv ok, needs SCL lib path) for the best Python >= 3.8, or None.

    A candidate with venv/ensurepip beats one without; otherwise the order counts.
    """
    best = None
    seen = set()
    for path in candidates:
        real = os.path.realpath(path)
        # by its own path: the virtualenv's python is a symlink to one outside it
        if real in seen or (exclude_dir and under(path, exclude_dir)):
            continue
        seen.add(real)
        found = probe(path)
        if not found or found[0][:2] < MIN_PYTHON:
            continue
        if found[1]:
            return (path,) + found
        if best is None:
            best = (path,) + found
    return best


def register_scl_libs(python):
    """Make an SCL Python start without `scl enable`: its lib64 into ld.so.conf.d."""
    root = python.split("/usr/bin/")[0]
    scl = python.split("/")[3]
    conf = "/etc/ld.so.conf.d/%s.conf" % scl
    if not is_root():
        raise BootstrapError(
            EXIT_NO_PYTHON,
            "%s needs %s/usr/lib64 on the library path" % (python, root),
            "Run this as root (it writes %s and runs ldconfig)." % conf,
        )
    say("registering %s/usr/lib64 in %s" % (root, conf))
    handle = open(conf, "w")
    try:
        handle.write(root + "/usr/lib64\n")
    finally:
        handle.close()
    run(["ldconfig"])


def ensure_python(opts, osr=None, candidates=None):
    """-> (path, version, has venv) of a Python >= 3.8, installing one if needed and allowed."""
    if opts.python:
        found = probe(opts.python)
        if not found or found[0][:2] < MIN_PYTHON:
            raise BootstrapError(
                EXIT_NO_PYTHON,
                "--python %s is not a working Python >= %d.%d" % ((opts.python,) + MIN_PYTHON),
            )
        chosen = (opts.python,) + found
    else:
        if candidates is None:
            candidates = [sys.executable] if sys.version_info[:2] >= MIN_PYTHON else []
            candidates += candidate_paths()
        chosen = find_python(candidates, exclude_dir=opts.prefix)
    osr = read_os_release() if osr is None else osr
    if chosen is None:
        plan, advice = python_install_plan(osr)
        if plan is None:
            raise BootstrapError(EXIT_NO_PYTHON, "no Python >= %d.%d found" % MIN_PYTHON, advice)
        if not opts.install_python or not is_root():
            raise BootstrapError(
                EXIT_NO_PYTHON,
                "no Python >= %d.%d found" % MIN_PYTHON,
                "Install one from the OS repositories (as root): "
                + "; ".join(show(argv) for argv in plan if argv[:2] != ["apt-get", "update"])
                + (" -- or run this as root and it does so." if opts.install_python else ""),
            )
        say("no Python >= %d.%d found; installing one from the OS repositories" % MIN_PYTHON)
        run_plan(plan, "Python >= %d.%d" % MIN_PYTHON)
        chosen = find_python(candidate_paths(), exclude_dir=opts.prefix)
        if chosen is None:
            raise BootstrapError(
                EXIT_NO_PYTHON,
                "installed the packages but still found no working Python >= %d.%d" % MIN_PYTHON,
            )
    path, version, venv_ok, needs_scl = chosen
    say("using Python %s at %s" % (".".join(str(v) for v in version), path))
    if needs_scl:
        register_scl_libs(path)
    return path, version, venv_ok


def ensure_venv_support(python, version, opts, osr=None):
    """Install the OS package that gives `python` its venv/ensurepip modules."""
    osr = read_os_release() if osr is None else osr
    plan = venv_package_plan(osr, python, version)
    hint = (
        "Install it: " + "; ".join(show(a) for a in plan if a[:2] != ["apt-get", "update"])
        if plan
        else "Install the venv/ensurepip support for that interpreter."
    )
    if plan is None or not opts.install_python or not is_root():
        raise BootstrapError(EXIT_VENV, "%s has no working venv/ensurepip module" % python, hint)
    say("%s lacks venv/ensurepip; installing its package" % python)
    try:
        run_plan(plan, "venv support")
    except BootstrapError as exc:
        raise BootstrapError(EXIT_VENV, exc.message, hint)
    found = probe(python)
    if not found or not found[1]:
        raise BootstrapError(EXIT_VENV, "%s still has no venv/ensurepip module" % python, hint)


# ------------------------------------------------------------------ virtualenv


def venv_python(prefix):
    return os.path.join(prefix, "bin", "python")


def venv_healthy(prefix):
    python = venv_python(prefix)
    if not os.path.isfile(os.path.join(prefix, "pyvenv.cfg")) or not os.path.exists(python):
        return False
    return capture([python, "-c", HEALTH])[0] == 0


def writable_parent(path):
    parent = os.path.dirname(path.rstrip(os.sep)) or os.sep
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return os.access(parent, os.W_OK)


def ensure_venv(python, opts, version=None, venv_ok=True):
    """Create the virtualenv, or recreate it when its python is broken. -> its python."""
    prefix = opts.prefix
    if not venv_ok:
        ensure_venv_support(python, version, opts)
    if os.path.lexists(prefix):
        if os.path.islink(prefix) or not os.path.isdir(prefix):
            raise BootstrapError(EXIT_VENV, "%s exists and is not a directory" % prefix)
        if os.listdir(prefix) and not os.path.isfile(os.path.join(prefix, "pyvenv.cfg")):
            raise BootstrapError(
                EXIT_VENV,
                "%s exists, is not empty and is not a virtualenv; not touching it" % prefix,
                "Move it away, or choose another place with FRAKTI_INSTALL_PREFIX.",
            )
        say("virtualenv %s is broken; recreating it" % prefix)
        try:
            shutil.rmtree(prefix)
        except OSError as exc:
            raise BootstrapError(EXIT_VENV, "cannot remove %s: %s" % (prefix, exc))
    elif not writable_parent(prefix):
        raise BootstrapError(
            EXIT_VENV,
            "cannot create %s: permission denied" % prefix,
            "Run this as root (sudo), or set FRAKTI_INSTALL_PREFIX to a directory you own.",
        )
    argv = [python, "-m", "venv"]
    if opts.system_site_packages:
        argv.append("--system-site-packages")
    code = run(argv + [prefix], env=scl_env(python))
    if code != 0 or not venv_healthy(prefix):
        raise BootstrapError(
            EXIT_VENV,
            "creating the virtualenv %s with %s failed%s"
            % (prefix, python, " (exit %d)" % code if code else ""),
            "If the messages above mention ensurepip or venv, install the venv package for "
            "that Python (Debian/Ubuntu: python3-venv or python3.X-venv) and run this again.",
        )
    return venv_python(prefix)


# ------------------------------------------------------------------- installing


def _safe_members(tar, dest):
    dest = os.path.realpath(dest)
    for member in tar.getmembers():
        target = os.path.realpath(os.path.join(dest, member.name))
        if not inside(target, dest) or os.path.isabs(member.name):
            raise BootstrapError(EXIT_BUNDLE, "bundle member %r escapes the bundle" % member.name)
        if member.issym() or member.islnk():
            # a symlink is relative to its directory, a hard link to the archive's root
            base = os.path.dirname(target) if member.issym() else dest
            link = os.path.join(base, member.linkname)
            if os.path.isabs(member.linkname) or not inside(link, dest):
                raise BootstrapError(
                    EXIT_BUNDLE, "bundle link %r points outside the bundle" % member.name
                )
        elif not (member.isfile() or member.isdir()):
            continue
        yield member


def open_bundle(path, workdir):
    """A bundle (.tar.gz or directory) -> the directory holding manifest.json and wheels/."""
    if os.path.isdir(path):
        root = path
    elif os.path.isfile(path):
        root = tempfile.mkdtemp(prefix="bundle-", dir=workdir)
        try:
            tar = tarfile.open(path, "r:*")
        except (tarfile.TarError, IOError, OSError) as exc:
            raise BootstrapError(EXIT_BUNDLE, "cannot read bundle %s: %s" % (path, exc))
        try:
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(root, list(_safe_members(tar, root)), **kwargs)
        except (tarfile.TarError, IOError, OSError) as exc:
            raise BootstrapError(EXIT_BUNDLE, "cannot unpack bundle %s: %s" % (path, exc))
        finally:
            tar.close()
    else:
        raise BootstrapError(EXIT_BUNDLE, "bundle %s does not exist" % path)
    if not os.path.isfile(os.path.join(root, "manifest.json")):
        subdirs = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
        if len(subdirs) == 1 and os.path.isfile(os.path.join(root, subdirs[0], "manifest.json")):
            root = os.path.join(root, subdirs[0])
        else:
            raise BootstrapError(EXIT_BUNDLE, "bundle %s has no manifest.json" % path)
    try:
        handle = open(os.path.join(root, "manifest.json"), "rb")
        try:
            manifest = json.loads(handle.read().decode("utf-8"))
        finally:
            handle.close()
    except (IOError, OSError, ValueError) as exc:
        raise BootstrapError(EXIT_BUNDLE, "bundle %s: unreadable manifest.json: %s" % (path, exc))
    wheels = manifest.get("wheels") if isinstance(manifest, dict) else None
    if not isinstance(wheels, list) or not wheels:
        raise BootstrapError(EXIT_BUNDLE, "bundle %s: manifest.json lists no \"wheels\"" % path)
    ours = False
    for entry in wheels:
        if not isinstance(entry, type(u"")) and not isinstance(entry, str):
            raise BootstrapError(EXIT_BUNDLE, "bundle %s: bad wheel entry %r" % (path, entry))
        full = os.path.join(root, entry)
        if os.path.isabs(entry) or not inside(full, os.path.join(root, "wheels")):
            raise BootstrapError(
                EXIT_BUNDLE, "bundle %s: wheel %s is not under wheels/" % (path, entry)
            )
        if not entry.endswith(".whl") or not os.path.isfile(full):
            raise BootstrapError(EXIT_BUNDLE, "bundle %s: wheel %s is missing" % (path, entry))
        ours = ours or os.path.basename(entry).lower().startswith("frakti_install-")
    if not ours:
        raise BootstrapError(EXIT_BUNDLE, "bundle %s holds no frakti_install wheel" % path)
    return root


SOURCE_IGNORE = (
    ".git", ".venv", ".vagrant", ".tox", ".nox", "build", "dist", "*.egg-info", "__pycache__",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".join",
)


def source_copy(path, workdir):
    """--from-path: a wheel/sdist as is; a source tree copied first, because pip builds
    in-tree and the tree may be read-only or shared (Vagrant's /vagrant)."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise BootstrapError(EXIT_USAGE, "--from-path %s does not exist" % path)
    if not (os.path.isfile(os.path.join(path, "pyproject.toml"))
            or os.path.isfile(os.path.join(path, "setup.py"))):
        raise BootstrapError(EXIT_USAGE, "--from-path %s is not a Python source tree" % path)
    copy = os.path.join(workdir, "source")
    say("copying %s to %s" % (path, copy))
    try:
        shutil.copytree(path, copy, symlinks=True, ignore=shutil.ignore_patterns(*SOURCE_IGNORE))
    except (shutil.Error, OSError) as exc:
        raise BootstrapError(EXIT_USAGE, "cannot copy --from-path %s: %s" % (path, exc))
    return copy


def pip_env():
    env = dict(os.environ)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.pop("PYTHONHOME", None)
    return env


def pip_install(python, args, opts):
    base = [python, "-m", "pip", "install", "--no-input", "--upgrade"]
    return run(base + list(opts.pip_args) + list(args), env=pip_env())


def install(python, opts):
    """pip-install (or upgrade) frakti-install into the virtualenv."""
    spec = PACKAGE + ("==" + opts.version if opts.version else "")
    workdir = tempfile.mkdtemp(prefix="frakti-bootstrap-")
    try:
        if opts.bundle:
            root = open_bundle(opts.bundle, workdir)
            wheels = os.path.join(root, "wheels")
            offline = ["--no-index", "--find-links", wheels]
            if glob.glob(os.path.join(wheels, "pip-*.whl")):
                if pip_install(python, offline + ["pip"], opts) != 0:
                    say("warning: upgrading pip from the bundle failed; continuing")
            else:
                say("the bundle carries no pip wheel; keeping the virtualenv's pip")
            target = offline + [spec]
        else:
            if pip_install(python, ["pip"], opts) != 0:
                say("warning: upgrading pip failed; continuing with the virtualenv's pip")
            if opts.from_url:
                target = [opts.from_url]
            elif opts.from_path:
                target = [source_copy(opts.from_path, workdir)]
            else:
                target = [spec]
        code = pip_install(python, target, opts)
        if code != 0:
            raise BootstrapError(
                EXIT_PIP,
                "pip install of frakti-install failed (exit %d)" % code,
                "See pip's messages above; the virtualenv %s is left in place and the next "
                "run repairs it." % opts.prefix,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    command = os.path.join(opts.prefix, "bin", "frakti-install")
    if not os.access(command, os.X_OK):
        raise BootstrapError(EXIT_PIP, "pip finished but %s is missing" % command)
    return command


def link(command, bin_link):
    """bin_link -> command, atomically (a symlink under a temporary name, then rename)."""
    try:
        if os.path.islink(bin_link) and os.readlink(bin_link) == command:
            say("%s already points at %s" % (bin_link, command))
            return
    except OSError:
        pass
    directory = os.path.dirname(bin_link)
    temp = os.path.join(directory, ".%s.tmp-%d" % (os.path.basename(bin_link), os.getpid()))
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory)
        if os.path.lexists(temp):
            os.unlink(temp)
        os.symlink(command, temp)
        os.rename(temp, bin_link)
    except OSError as exc:
        try:
            if os.path.lexists(temp):
                os.unlink(temp)
        except OSError:
            pass
        raise BootstrapError(
            EXIT_LINK,
            "cannot link %s -> %s: %s" % (bin_link, command, exc.strerror or exc),
            "Run this as root, or set FRAKTI_INSTALL_BIN_LINK to a path you can write.",
        )
    say("linked %s -> %s" % (bin_link, command))


def reattach_terminal():
    """When this script came in on stdin (curl | python -), give frakti-install the tty."""
    if sys.argv and sys.argv[0] not in ("-", ""):
        return
    try:
        if os.isatty(0):
            return
        fd = os.open("/dev/tty", os.O_RDONLY)
    except OSError:
        return
    os.dup2(fd, 0)
    os.close(fd)


def run_frakti_install(command, args):
    sys.stdout.flush()
    sys.stderr.flush()
    reattach_terminal()
    try:
        os.execv(command, [command] + list(args))
    except OSError as exc:
        raise BootstrapError(EXIT_EXEC, "cannot run %s: %s" % (command, exc.strerror or exc))


# ------------------------------------------------------------------------ main


def bootstrap(opts):
    if venv_healthy(opts.prefix):
        say("virtualenv %s is healthy; upgrading in place" % opts.prefix)
        venv = venv_python(opts.prefix)
    else:
        python, version, venv_ok = ensure_python(opts)
        venv = ensure_venv(python, opts, version, venv_ok)
    command = install(venv, opts)
    link(command, opts.bin_link)
    if not opts.args:
        say("frakti-install is installed; run: frakti-install --help")
        return EXIT_OK
    say("running: frakti-install " + show(opts.args))
    run_frakti_install(command, opts.args)
    return EXIT_INTERNAL  # not reached: execv replaced this process


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(argv)
        if opts.help:
            print(__doc__)
            return EXIT_OK
        return bootstrap(opts)
    except BootstrapError as exc:
        say("error: " + exc.message)
        if exc.hint:
            say("hint: " + exc.hint)
        return exc.code
    except KeyboardInterrupt:
        say("interrupted; run the same command again to finish")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
