# TEST STAND-IN support code (frakti-install end-to-end tests). build.py inlines
# this file into every stand-in program in place of its `from common import`
# statement, so each served file is one self-contained Python script. Nothing here is real
# Kubernetes, frakti or hyperd code.
import contextlib
import ctypes
import datetime
import fcntl
import json
import os
import socket
import struct
import sys

STATE_DIR = "/var/lib/standin-k8s"
STATE_PATH = STATE_DIR + "/cluster.json"


class FlagError(Exception):
    pass


def parse_flags(args, spec, style="pflag", normalize=True, shorthands=None):
    """Parse Go-style flags. spec maps name -> "bool" | "str" | "int" | "list".

    style "pflag" (spf13/pflag, used by Kubernetes and frakti): --name=value,
    --name value, --bool, --bool=false, flags and arguments interspersed,
    one-letter shorthands (-o json) from `shorthands` {letter: name}.
    style "go" (the standard flag package, used by hyperd): -name or --name,
    parsing stops at the first non-flag argument.
    normalize: Kubernetes' word-separator normalisation (--log_dir == --log-dir).
    Returns (values, positionals); values only holds flags that were given.
    """
    values, positionals = {}, []
    shorthands = shorthands or {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positionals += args[i:]
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            if style == "go":
                positionals += args[i:]
                break
            continue
        if style == "pflag" and not arg.startswith("--"):
            letter = arg[1:2]
            if letter not in shorthands:
                raise FlagError(f"unknown shorthand flag: '{letter}' in {arg}")
            rest = arg[2:].lstrip("=")
            arg = "--" + shorthands[letter] + ("=" + rest if rest else "")
        name, has_value, value = arg.lstrip("-").partition("=")
        key = name.replace("_", "-") if normalize else name
        kind = spec.get(key)
        if kind is None:
            if style == "go":
                raise FlagError(f"flag provided but not defined: -{name}")
            raise FlagError(f"unknown flag: --{name}")
        if kind == "bool":
            if not has_value:
                value = "true"
            if value.lower() not in ("1", "t", "true", "0", "f", "false"):
                raise FlagError(
                    f'invalid argument "{value}" for "--{name}" flag: strconv.ParseBool: '
                    f'parsing "{value}": invalid syntax'
                )
            values[key] = value.lower() in ("1", "t", "true")
            continue
        if not has_value:
            if i >= len(args):
                raise FlagError(f"flag needs an argument: --{name}")
            value = args[i]
            i += 1
        if kind == "int":
            try:
                value = int(value)
            except ValueError:
                raise FlagError(
                    f'invalid argument "{value}" for "--{name}" flag: strconv.ParseInt: '
                    f'parsing "{value}": invalid syntax'
                ) from None
        if kind == "list":
            values.setdefault(key, [])
            values[key] += [v for v in value.split(",") if v]
        else:
            values[key] = value
    return values, positionals


def set_process_name(name):
    """Make ps, pgrep -x and systemd show the program name, not python3."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def glog(level, message, out=None):
    """A line in klog/glog format: Lmmdd hh:mm:ss.uuuuuu pid file:line] message."""
    now = datetime.datetime.now()
    stamp = now.strftime("%m%d %H:%M:%S.%f")
    line = f"{level}{stamp} {os.getpid():7d} standin.go:1] {message}"
    print(line, file=out or sys.stderr, flush=True)


def fatal(message, code=255):
    glog("F", message)
    sys.exit(code)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_text(path):
    with open(path) as fh:
        return fh.read()


def atomic_write(path, data, mode=0o644):
    if isinstance(data, str):
        data = data.encode()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def tcp_accepts(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def unix_path(endpoint):
    return endpoint[len("unix://") :] if endpoint.startswith("unix://") else endpoint


def unix_request(path, payload=None, timeout=2.0):
    """Connect to a unix socket; return the first line it sends (b"" if none), or None if refused."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        if payload is not None:
            s.sendall(payload)
        data = b""
        while b"\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.split(b"\n", 1)[0]
    except socket.timeout:
        return b""
    except OSError:
        return None
    finally:
        s.close()


def port_free(port, host="0.0.0.0"):
    """What Go's net.Listen(":port") would say (it sets SO_REUSEADDR)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, int(port)))
        return True
    except OSError:
        return False
    finally:
        s.close()


def listen_tcp(host, port):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(64)
    return s


def swap_devices():
    with open("/proc/swaps") as fh:
        return [line.split()[0] for line in fh.read().splitlines()[1:] if line.strip()]


def default_route():
    """(interface, IPv4 address) of the IPv4 default route, or None."""
    try:
        with open("/proc/net/route") as fh:
            rows = [line.split() for line in fh.read().splitlines()[1:]]
    except OSError:
        return None
    for row in rows:
        if len(row) > 7 and row[1] == "00000000" and row[7] == "00000000":
            addr = interface_ipv4(row[0])
            if addr:
                return row[0], addr
    return None


def interface_ipv4(name):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packed = fcntl.ioctl(
            s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15])
        )  # SIOCGIFADDR
        return socket.inet_ntoa(packed[20:24])
    except OSError:
        return None
    finally:
        s.close()


def process_argv(pid):
    """argv of a process, with a python interpreter in front of a script dropped."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []
    if argv and os.path.basename(argv[0]).startswith("python") and len(argv) > 1:
        argv = argv[1:]
    return argv


def find_processes(program):
    """[(pid, argv)] of live processes whose program is named `program`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            argv = process_argv(entry)
            if argv and os.path.basename(argv[0]) == program:
                found.append((int(entry), argv))
    return found


def flag_value(argv, name, default=None):
    """Value of --name in an argv (either --name=v or --name v)."""
    for i, arg in enumerate(argv):
        bare = arg.lstrip("-").replace("_", "-")
        if bare == name and i + 1 < len(argv) and arg.startswith("-"):
            return argv[i + 1]
        if bare.startswith(name + "=") and arg.startswith("-"):
            return bare.split("=", 1)[1]
    return default


def read_simple_yaml(path):
    """Top-level "key: value" pairs of a YAML file (enough for the files kubeadm writes)."""
    pairs = {}
    with open(path) as fh:
        for line in fh:
            if line[:1].isspace() or ":" not in line or line.startswith("#"):
                continue
            key, _, value = line.partition(":")
            pairs[key.strip()] = value.strip().strip('"').strip("'")
    return pairs


def _yaml_scalar(text):
    text = text.strip()
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    return text or None


def _yaml_block(lines, i, indent):
    """The map or list whose lines start at lines[i] (indent, text); and the next i."""
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        items = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1][:1] == "-":
            rest = lines[i][1][1:].strip()
            if ": " in rest or rest.endswith(":"):  # a map as a list item
                lines[i] = (indent + 2, rest)
                value, i = _yaml_block(lines, i, indent + 2)
            else:
                value, i = _yaml_scalar(rest), i + 1
            items.append(value)
        return items, i
    mapping = {}
    while i < len(lines) and lines[i][0] == indent and lines[i][1][:1] != "-":
        key, _, rest = lines[i][1].partition(":")
        i += 1
        nested = i < len(lines) and (
            lines[i][0] > indent or (lines[i][0] == indent and lines[i][1][:1] == "-")
        )
        if rest.strip() or not nested:
            mapping[key.strip()] = _yaml_scalar(rest)
        else:
            mapping[key.strip()], i = _yaml_block(lines, i, lines[i][0])
    return mapping, i


def read_yaml_documents(path):
    """The documents of a block-style YAML file (maps, lists, plain or quoted
    scalars: what a kubeadm --config file holds), as kubeadm splits them on ---."""
    documents = []
    chunk = []
    for line in (read_text(path) or "").splitlines() + ["---"]:
        if line.rstrip() == "---":
            rows = [
                (len(r) - len(r.lstrip(" ")), r.strip())
                for r in chunk
                if r.strip() and not r.lstrip().startswith("#")
            ]
            if rows:
                documents.append(_yaml_block(rows, 0, rows[0][0])[0])
            chunk = []
        else:
            chunk.append(line)
    return documents


def kubeadm_config_flags(path, schemas, opts, allowed):
    """The flags a kubeadm --config file stands for, as kubeadm reads it: only a
    schema this release knows, and only `allowed` flags beside --config
    (ValidateMixedArguments). Returns (flags, error message or None)."""
    mixed = sorted(k for k in opts if k not in allowed and not k.startswith("skip-"))
    if mixed:
        return None, f"can not mix '--config' with arguments [{' '.join(mixed)}]"
    if not os.path.exists(path):
        return None, f"unable to read config from {path!r} [open {path}: no such file or directory]"
    flags = {}
    for doc in read_yaml_documents(path):
        version, kind = doc.get("apiVersion"), doc.get("kind")
        if version not in schemas:
            return None, f'no kind "{kind}" is registered for version "{version}" in scheme'
        registration = doc.get("nodeRegistration") or {}
        discovery = (doc.get("discovery") or {}).get("bootstrapToken") or {}
        endpoint = doc.get("apiEndpoint") or doc.get("localAPIEndpoint") or {}
        networking = doc.get("networking") or {}
        found = {
            "token": ((doc.get("bootstrapTokens") or [{}])[0].get("token")
                      or doc.get("token") or discovery.get("token")),
            "node-name": registration.get("name"),
            "cri-socket": registration.get("criSocket"),
            "apiserver-advertise-address": endpoint.get("advertiseAddress"),
            "pod-network-cidr": networking.get("podSubnet"),
            "service-cidr": networking.get("serviceSubnet"),
            "kubernetes-version": doc.get("kubernetesVersion"),
            "discovery-token-ca-cert-hash": (doc.get("discoveryTokenCACertHashes")
                                             or discovery.get("caCertHashes")),
            "api-server": ((doc.get("discoveryTokenAPIServers") or [None])[0]
                           or discovery.get("apiServerEndpoint")),
        }  # fmt: skip
        flags.update({k: v for k, v in found.items() if v})
    return flags, None


class State:
    """The stand-in cluster's "etcd": one JSON file, locked and replaced atomically."""

    def __init__(self):
        os.makedirs(STATE_DIR, exist_ok=True)
        self._lock = open(STATE_DIR + "/.lock", "a")  # noqa: SIM115 - held until __exit__

    def __enter__(self):
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            with open(STATE_PATH) as fh:
                self.data = json.load(fh)
        except (OSError, ValueError):
            self.data = {}
        self.data.setdefault("nodes", {})
        self.data.setdefault("heartbeats", {})
        self.data.setdefault("configmaps", {})
        self._before = json.dumps(self.data, sort_keys=True)
        return self.data

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None and json.dumps(self.data, sort_keys=True) != self._before:
                atomic_write(STATE_PATH, json.dumps(self.data, indent=1, sort_keys=True) + "\n")
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
        return False


def read_state():
    try:
        with open(STATE_PATH) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        data = {}
    data.setdefault("nodes", {})
    data.setdefault("heartbeats", {})
    data.setdefault("configmaps", {})
    return data
