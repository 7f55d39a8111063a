#!/usr/bin/python3
# TEST STAND-IN, not Kubernetes. It imitates kubeadm, kubelet and kubectl of
# Kubernetes @VERSION@ (the v1.31 packages of pkgs.k8s.io) for frakti-install's
# kata-profile end-to-end test, which cannot download the real binaries.
# katalab.py writes this file three times, as kubeadm, kubelet and kubectl,
# with PROGRAM and VERSION filled in and tests/e2e/standins/common.py inlined.
#
# What it imitates is what the installer looks at, as v1.31 does it:
# - kubeadm init: its flags (no --container-runtime), preflight (the CRI
#   socket must accept a connection and serve the CRI, asked of the real
#   containerd with `ctr plugins ls`; ports, files, ip_forward, tools, kubelet
#   version skew), the sandbox image check against the runtime's, the files
#   it writes (pki, admin.conf, kubelet.conf, static pod manifests,
#   /var/lib/kubelet/config.yaml with cgroupDriver: systemd, kubeadm-flags.env),
#   `systemctl restart kubelet`, the wait for the API server, the control-plane
#   label and taint (node-role.kubernetes.io/control-plane:NoSchedule).
#   Images are not pulled (no registry here). Each init is logged as one JSON
#   line in /var/log/standin-kubeadm-init.log. kubeadm reset -f. kubeadm token
#   create [--print-join-command] (the join line a worker would run).
# - kubelet: refuses removed flags, a missing --config file, swap, a CRI
#   endpoint that does not answer, from 1.35 a cgroup v1 host (failCgroupV1
#   not false; kubeadm's preflight refuses it too); then opens 10250/10248,
#   "runs" the static pods (ports: the API server 6443, controller-manager
#   10257, scheduler 10259, etcd 2379/2380), registers the node (podCIDR as the controller-manager
#   would allocate it), reports Ready only while the runtime's socket answers
#   and a CNI config exists, and (standing in for the controller-manager)
#   creates the default service account a few seconds after the API is up.
# - kubectl: get nodes, taint/annotate/label nodes, get runtimeclass,
#   apply -f - of a RuntimeClass (node.k8s.io/v1; handler immutable), and
#   apply --dry-run=server of a pod through the admission the API server
#   applies (ServiceAccount, RuntimeClass: overhead filled in from the stored
#   RuntimeClass) and its defaults.
# - pods, for `frakti-install verify` (the "pods" section below says what and
#   where each text comes from): kubectl create/get/logs/delete of pods, get
#   events, delete runtimeclass; the kubelet runs the pods bound to its node
#   through the real containerd's configured handlers (runc's on this host,
#   Kata's through the Kata stand-in shim), and reports nodeInfo.bootID and
#   kernelVersion.
# The "cluster" is one JSON file, /var/lib/standin-k8s/cluster.json. No
# container is ever made: a pod's command runs as a host process (runc) or
# through the shim stand-in, and no image is pulled.
import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

from common import (  # katalab.py replaces this statement with common.py itself
    FlagError,
    State,
    atomic_write,
    default_route,
    glog,
    kubeadm_config_flags,
    listen_tcp,
    now_iso,
    parse_flags,
    port_free,
    read_simple_yaml,
    read_state,
    read_text,
    set_process_name,
    swap_devices,
    tcp_accepts,
    unix_path,
)

PROGRAM = "@PROGRAM@"
VERSION = "@VERSION@"

K8S_DIR = "/etc/kubernetes"
MANIFESTS = K8S_DIR + "/manifests"
PKI = K8S_DIR + "/pki"
ADMIN_CONF = K8S_DIR + "/admin.conf"
KUBELET_DIR = "/var/lib/kubelet"
KUBELET_CONFIG = KUBELET_DIR + "/config.yaml"
KUBEADM_FLAGS_ENV = KUBELET_DIR + "/kubeadm-flags.env"
ETCD_DIR = "/var/lib/etcd"
CNI_CONF_DIR = "/etc/cni/net.d"
INIT_LOG = "/var/log/standin-kubeadm-init.log"
DEFAULT_ENDPOINT = "unix:///run/containerd/containerd.sock"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
CONTROL_PLANE = "node-role.kubernetes.io/control-plane"
STATIC_PODS = {  # manifest -> ports its container would listen on (address, port)
    "kube-apiserver.yaml": (("0.0.0.0", 6443),),
    "kube-controller-manager.yaml": (("127.0.0.1", 10257),),
    "kube-scheduler.yaml": (("127.0.0.1", 10259),),
    "etcd.yaml": (("127.0.0.1", 2379), ("127.0.0.1", 2380)),
}
APISERVER_BANNER = b"kube-apiserver stand-in " + VERSION.encode()
SERVICE_ACCOUNT_DELAY = 3.0  # seconds after the API server is up


def minor_of(version):
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def hostname():
    return socket.gethostname().lower()


def new_uid():
    return str(uuid.uuid4())


def kubeconfig_server(path):
    with open(path) as fh:
        m = re.search(r"^\s*server:\s*(\S+)", fh.read(), re.M)
    return m.group(1) if m else None


def server_hostport(server):
    m = re.match(r"^(?:https?://)?\[?([^\]/]+?)\]?(?::(\d+))?/?$", server)
    if not m:
        return server, 443
    return m.group(1), int(m.group(2) or 443)


def apiserver_up(host, port):
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.settimeout(2)
            return s.recv(256).startswith(b"kube-apiserver stand-in")
    except OSError:
        return False


def unix_accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def cri_problem(endpoint):
    """What a CRI v1 client gets from the endpoint: None when it serves the CRI.

    The socket must accept a connection (the real containerd's); the CRI service
    is there when containerd reports its cri plugin "ok" (`ctr plugins ls`), as
    a disabled plugin answers runtime.v1.RuntimeService calls with Unimplemented."""
    if not endpoint.startswith("unix://"):
        return f'unsupported CRI endpoint "{endpoint}" (want unix://PATH)'
    path = unix_path(endpoint)
    if not unix_accepts(path):
        return (
            f'validate CRI v1 runtime API for endpoint "{endpoint}": rpc error: code = '
            f'Unavailable desc = connection error: desc = "transport: Error while dialing: '
            f'dial unix {path}: connect: no such file or directory"'
        )
    ctr = shutil.which("ctr")
    if ctr is None:
        return None  # another runtime: a connection is all that can be checked here
    out = subprocess.run(
        [ctr, "--address", path, "plugins", "ls"], capture_output=True, text=True, timeout=30
    )
    for line in out.stdout.splitlines():
        fields = line.split()
        if fields[:2] == ["io.containerd.grpc.v1", "cri"] and fields[-1] == "ok":
            return None
    return (
        f'validate CRI v1 runtime API for endpoint "{endpoint}": rpc error: code = '
        "Unimplemented desc = unknown service runtime.v1.RuntimeService"
    )


def containerd_dump():
    """`containerd config dump` as {dotted.key: value text} (what the runtime reports);
    containerd 2.x quotes keys and strings with ' where 1.x uses ": read as \"."""
    if shutil.which("containerd") is None:
        return {}
    out = subprocess.run(
        ["containerd", "config", "dump"], capture_output=True, text=True, timeout=60
    ).stdout
    values, table = {}, ""
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("["):
            table = line.strip("[]").replace("'", '"')
        elif "=" in line:
            key, _, value = line.partition("=")
            value = value.strip()
            if value[:1] == "'":
                value = '"' + value.strip("'") + '"'
            values[f"{table}.{key.strip()}" if table else key.strip()] = value
    return values


def runtime_sandbox_image():
    """The sandbox (pause) image containerd's CRI uses: config version 2's
    sandbox_image, or version 3's pinned_images.sandbox (containerd 2.x)."""
    dump = containerd_dump()
    for key in (
        'plugins."io.containerd.grpc.v1.cri".sandbox_image',
        'plugins."io.containerd.cri.v1.images".pinned_images.sandbox',
    ):
        if key in dump:
            return dump[key].strip('"')
    return ""


def runtime_version(endpoint):
    """containerd://<server version>, as the kubelet reports the runtime in nodeInfo."""
    ctr = shutil.which("ctr")
    if ctr is None:
        return "unknown://unknown"
    out = subprocess.run(
        [ctr, "--address", unix_path(endpoint), "version"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    m = re.search(r"Server:\s*\n\s*Version:\s*(\S+)", out)
    return f"containerd://{m.group(1)}" if m else "containerd://unknown"


def klog_fail(message, code=1):
    """How the v1.31 binaries end on a fatal error."""
    glog("E", f'"command failed" err="{message}"')
    sys.exit(code)


# ==========================================================================
# a little YAML: the block style kubectl is fed here (mappings, lists, scalars)


def _scalar(text):
    text = text.strip()
    if text[:1] in ("'", '"'):
        return text[1:-1] if text[0] == "'" else json.loads(text)
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~", ""):
        return None
    if re.match(r"^-?\d+$", text):
        return int(text)
    if text in ("{}", "[]"):
        return {} if text == "{}" else []
    return text


def _strip_comment(line):
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def parse_yaml_documents(text):
    if text.lstrip().startswith(("{", "[")):
        return [json.loads(text)]
    docs, current = [], []
    for raw in text.splitlines():
        if raw.strip() == "---":
            docs.append(current)
            current = []
            continue
        line = _strip_comment(raw)
        if line.strip():
            current.append((len(line) - len(line.lstrip(" ")), line.strip()))
    docs.append(current)
    return [_block(lines, 0, lines[0][0])[0] for lines in docs if lines]


def _block(lines, i, indent):
    """(value, next index) of the block starting at lines[i] with this indent."""
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        items = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1][:1] == "-":
            rest = lines[i][1][1:].strip()
            if not rest:
                value, i = _block(lines, i + 1, lines[i + 1][0])
            elif re.match(r"^[^'\"\s][^:]*:(\s|$)", rest):
                # "- key: value" opens a mapping whose keys sit at indent + 2
                lines = lines[:i] + [(indent + 2, rest)] + lines[i + 1 :]
                value, i = _block(lines, i, indent + 2)
            else:
                value, i = _scalar(rest), i + 1
            items.append(value)
        return items, i
    mapping = {}
    while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
        key, _, rest = lines[i][1].partition(":")
        key = _scalar(key)
        if rest.strip():
            mapping[key], i = _scalar(rest), i + 1
        elif i + 1 < len(lines) and (
            lines[i + 1][0] > indent
            or (lines[i + 1][0] == indent and lines[i + 1][1].startswith("- "))
        ):
            mapping[key], i = _block(lines, i + 1, lines[i + 1][0])
        else:
            mapping[key], i = None, i + 1
    return mapping, i


# ==========================================================================
# kubeadm

INIT_FLAGS = {
    "apiserver-advertise-address": "str",
    "apiserver-bind-port": "int",
    "apiserver-cert-extra-sans": "list",
    "cert-dir": "str",
    "certificate-key": "str",
    "config": "str",
    "control-plane-endpoint": "str",
    "cri-socket": "str",
    "dry-run": "bool",
    "feature-gates": "str",
    "ignore-preflight-errors": "list",
    "image-repository": "str",
    "kubernetes-version": "str",
    "node-name": "str",
    "patches": "str",
    "pod-network-cidr": "str",
    "service-cidr": "str",
    "service-dns-domain": "str",
    "skip-certificate-key-print": "bool",
    "skip-phases": "list",
    "skip-token-print": "bool",
    "token": "str",
    "token-ttl": "str",
    "upload-certs": "bool",
    "v": "int",
    "rootfs": "str",
    "help": "bool",
}
RESET_FLAGS = {
    "cert-dir": "str",
    "cleanup-tmp-dir": "bool",
    "cri-socket": "str",
    "dry-run": "bool",
    "force": "bool",
    "ignore-preflight-errors": "list",
    "kubeconfig": "str",
    "v": "int",
    "rootfs": "str",
}


class KubeadmExit(Exception):
    def __init__(self, code, message=""):
        super().__init__(message)
        self.code = code
        self.message = message


def kubeadm_main(args):
    try:
        if not args or args[0] in ("-h", "--help", "help"):
            print("kubeadm (TEST STAND-IN of v1.31): init, reset, token, upgrade, version")
            return 0
        command, rest = args[0], args[1:]
        if command == "version":
            flags, _ = parse_flags(rest, {"output": "str"}, shorthands={"o": "output"})
            if flags.get("output") == "short":
                print(VERSION)
            else:
                print(f'kubeadm version: &version.Info{{GitVersion:"{VERSION}"}}')
            return 0
        if command == "init":
            return kubeadm_init(rest)
        if command == "reset":
            return kubeadm_reset(rest)
        if command == "token":
            return kubeadm_token(rest)
        if command == "upgrade":
            return kubeadm_upgrade(rest)
        raise KubeadmExit(
            1,
            f'unknown command "{command}" for "kubeadm"\nTo see the stack trace of this '
            "error execute with --v=5 or higher",
        )
    except FlagError as exc:
        print(
            f"{exc}\nTo see the stack trace of this error execute with --v=5 or higher",
            file=sys.stderr,
        )
        return 1
    except KubeadmExit as exc:
        if exc.message:
            print(exc.message, file=sys.stderr)
        return exc.code


def preflight(opts, cp_version, endpoint):
    """(name, "ERROR"|"WARNING", message) for each failed v1.31 init preflight check."""
    failed = []

    def fail(name, message, level="ERROR"):
        failed.append((name, level, message))

    if os.geteuid() != 0:
        fail("IsPrivilegedUser", "user is not running as root")
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        fail("NumCPU", f"the number of available CPUs {cpus} is less than the required 2")
    problem = cri_problem(endpoint)
    if problem:
        fail("CRI", f"container runtime is not running: {problem}")
    mine = minor_of(VERSION)
    if cp_version > mine:
        fail(
            "KubernetesVersion",
            "Kubernetes version is greater than kubeadm version. Please consider to upgrade "
            f"kubeadm. Kubernetes version: {'.'.join(map(str, cp_version))}. Kubeadm version: "
            f"{mine[0]}.{mine[1]}.x",
            "WARNING",
        )
    enabled = subprocess.run(["systemctl", "is-enabled", "--quiet", "kubelet.service"])
    if enabled.returncode != 0:
        fail(
            "Service-Kubelet",
            "kubelet service is not enabled, please run 'systemctl enable kubelet.service'",
            "WARNING",
        )
    port = opts.get("apiserver-bind-port", 6443)
    for p in (port, 10259, 10257, 10250, 2379, 2380):
        if not port_free(p):
            fail(f"Port-{p}", f"Port {p} is in use")
    for manifest in STATIC_PODS:
        path = os.path.join(MANIFESTS, manifest)
        if os.path.exists(path):
            fail("FileAvailable-" + path.replace("/", "-"), f"{path} already exists")
    path = "/proc/sys/net/ipv4/ip_forward"
    if read_text(path).strip() != "1":
        fail("FileContent-" + path.replace("/", "-"), f"{path} contents are not set to 1")
    if swap_devices():
        fail(
            "Swap",
            "swap is supported for cgroup v2 only; the NodeSwap feature gate of the "
            "kubelet is beta but disabled by default",
            "WARNING",
        )
    for exe, mandatory in (
        ("conntrack", True),
        ("ip", True),
        ("iptables", True),
        ("mount", True),
        ("nsenter", True),
        ("ethtool", False),
        ("socat", False),
        ("tc", False),
        ("touch", False),
    ):
        if shutil.which(exe) is None:
            fail(
                "FileExisting-" + exe,
                f"{exe} not found in system path",
                "ERROR" if mandatory else "WARNING",
            )
    if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        if minor_of(VERSION) >= (1, 35):
            # kubeadm 1.35's system validator (kubernetes/system-validators#59, KEP-5573)
            fail(
                "SystemVerification",
                "cgroups v1 support is deprecated and will be removed in a future release. "
                "Please migrate to cgroups v2. To explicitly enable cgroups v1 support, you "
                "must set the kubelet configuration option 'FailCgroupV1' to 'false'.",
            )
        else:
            fail(
                "SystemVerification",
                "cgroups v1 support is in maintenance mode, please migrate to cgroups v2",
                "WARNING",
            )
    kubelet = shutil.which("kubelet")
    if kubelet is None:
        fail("KubeletVersion", "couldn't get kubelet version: executable file not found in $PATH")
    else:
        out = subprocess.run([kubelet, "--version"], capture_output=True, text=True)
        kv = minor_of(out.stdout.strip().replace("Kubernetes ", ""))
        if kv is None or kv > cp_version:
            fail(
                "KubeletVersion",
                f"the kubelet version is higher than the control plane "
                f"version: {out.stdout.strip()}",
            )
        elif kv < (cp_version[0], cp_version[1] - 3):
            fail(
                "KubeletVersion",
                f"Kubelet version {out.stdout.strip()} is lower than kubeadm "
                "can support. Please upgrade kubelet",
            )
    if os.path.isdir(ETCD_DIR) and os.listdir(ETCD_DIR):
        fail("DirAvailable--var-lib-etcd", f"{ETCD_DIR} is not empty")
    try:
        socket.getaddrinfo(opts.get("node-name") or hostname(), None)
    except OSError:
        fail(
            "Hostname",
            f'hostname "{opts.get("node-name") or hostname()}" could not be reached',
            "WARNING",
        )
    return failed


def pem(kind, seed):
    body = base64.encodebytes(hashlib.sha512(seed.encode()).digest() * 4).decode()
    return f"-----BEGIN {kind}-----\n{body}-----END {kind}-----\n"


def kubeconfig(server, user, ca):
    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    return (
        "apiVersion: v1\nclusters:\n- cluster:\n"
        f"    certificate-authority-data: {b64(ca)}\n    server: {server}\n"
        "  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n"
        f"    user: {user}\n  name: {user}@kubernetes\ncurrent-context: {user}@kubernetes\n"
        f"kind: Config\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n"
        f"    client-certificate-data: {b64(pem('CERTIFICATE', user))}\n"
        f"    client-key-data: {b64(pem('RSA PRIVATE KEY', user))}\n"
    )


def static_pod(name, command):
    lines = [
        "apiVersion: v1",
        "kind: Pod",
        "metadata:",
        "  labels:",
        f"    component: {name}",
        "    tier: control-plane",
        f"  name: {name}",
        "  namespace: kube-system",
        "spec:",
        "  containers:",
        "  - command:",
    ]
    lines += [f"    - {c}" for c in command]
    image = "etcd:3.5.15-0" if name == "etcd" else f"{name}:{VERSION}"
    lines += [
        f"    image: registry.k8s.io/{image}",
        f"    name: {name}",
        "  hostNetwork: true",
        "  priorityClassName: system-node-critical",
        "status: {}",
    ]
    return "\n".join(lines) + "\n"


KUBELET_CONFIG_YAML = """apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
cgroupDriver: systemd
clusterDNS:
- {dns}
clusterDomain: cluster.local
containerRuntimeEndpoint: ""
healthzBindAddress: 127.0.0.1
healthzPort: 10248
kind: KubeletConfiguration
rotateCertificates: true
staticPodPath: /etc/kubernetes/manifests
"""


# kubeadm 1.31 reads v1beta3 (deprecated) and v1beta4, and lets these flags stand
# beside --config (validation.go isAllowedFlag; --skip-* too).
CONFIG_SCHEMAS = ("kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4")
WITH_CONFIG = (
    "config", "ignore-preflight-errors", "dry-run", "kubeconfig", "node-name",
    "kubeconfig-dir", "upload-certs", "print-join-command", "rootfs", "v", "log-file",
)  # fmt: skip


def kubeadm_init(args):
    opts, positionals = parse_flags(args, INIT_FLAGS)
    if positionals:
        raise KubeadmExit(1, f'unknown command "{positionals[0]}" for "kubeadm init"')
    if "config" in opts:
        flags, error = kubeadm_config_flags(opts["config"], CONFIG_SCHEMAS, opts, WITH_CONFIG)
        if error:
            raise KubeadmExit(1, error)
        opts = dict({k: v for k, v in opts.items() if k != "config"}, **flags)
    pod_cidr = opts.get("pod-network-cidr", "")
    service_cidr = opts.get("service-cidr", "10.96.0.0/12")
    for flag, value in (("podSubnet", pod_cidr), ("serviceSubnet", service_cidr)):
        if value:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise KubeadmExit(
                    1, f'networking.{flag}: Invalid value: "{value}": couldn\'t parse subnet'
                ) from None
    requested = opts.get("kubernetes-version", "stable-1")
    version = VERSION if requested.startswith(("stable", "latest")) else requested
    version = version if version.startswith("v") else "v" + version
    cp = minor_of(version)
    if cp is None:
        raise KubeadmExit(1, f'kubernetesVersion: Invalid value: "{requested}": invalid version')
    mine = minor_of(VERSION)
    if cp < (mine[0], mine[1] - 1):
        raise KubeadmExit(
            1,
            "this version of kubeadm only supports deploying clusters with the control plane "
            f"version >= {mine[0]}.{mine[1] - 1}.0. Current version: {version}",
        )
    endpoint = opts.get("cri-socket", DEFAULT_ENDPOINT)
    if not endpoint.startswith("unix://"):
        glog(
            "W",
            f"Usage of CRI endpoints without URL scheme is deprecated and can cause kubelet "
            f'errors in the future. Automatically prepending scheme "unix" to the "criSocket" '
            f'with value "{endpoint}". Your CRI socket: "{endpoint}"',
        )
        endpoint = "unix://" + endpoint
    token = opts.get("token")
    if token is not None and not re.match(r"^[a-z0-9]{6}\.[a-z0-9]{16}$", token):
        raise KubeadmExit(
            1,
            f'the bootstrap token "{token}" was not of the form '
            '"^([a-z0-9]{6})\\.([a-z0-9]{16})$"',
        )
    node = (opts.get("node-name") or hostname()).lower()
    sandbox = runtime_sandbox_image()
    with open(INIT_LOG, "a") as fh:
        record = {
            "time": now_iso(),
            "argv": [a if not a.startswith("--token") else "--token=<hidden>" for a in args],
            "pod_network_cidr": pod_cidr,
            "service_cidr": service_cidr,
            "kubernetes_version": version,
            "cri_socket": endpoint,
            "node_name": node,
            "runtime_sandbox_image": sandbox,
        }
        fh.write(json.dumps(record) + "\n")
    advertise = opts.get("apiserver-advertise-address")
    if not advertise:
        route = default_route()
        if route is None:
            raise KubeadmExit(1, "unable to select an IP from default routes.")
        advertise = route[1]
    port = opts.get("apiserver-bind-port", 6443)

    print(f"[init] Using Kubernetes version: {version}")
    print("[preflight] Running pre-flight checks")
    ignored = {i.lower() for i in opts.get("ignore-preflight-errors", [])}
    errors = []
    for name, level, message in preflight(opts, cp, endpoint):
        if level == "ERROR" and "all" not in ignored and name.lower() not in ignored:
            errors.append((name, message))
        else:
            print(f"\t[WARNING {name}]: {message}", file=sys.stderr)
    if errors:
        lines = ["error execution phase preflight: [preflight] Some fatal errors occurred:"]
        lines += ["\t[ERROR {}]: {}".format(*e) for e in errors]
        lines.append(
            "[preflight] If you know what you are doing, you can make a check "
            "non-fatal with `--ignore-preflight-errors=...`"
        )
        lines.append("To see the stack trace of this error execute with --v=5 or higher")
        raise KubeadmExit(1, "\n".join(lines))
    if sandbox and sandbox != PAUSE_IMAGE:
        glog(
            "W",
            f'detected that the sandbox image "{sandbox}" of the container runtime is '
            "inconsistent with that used by kubeadm.It is recommended to use "
            f'"{PAUSE_IMAGE}" as the CRI sandbox image.',
        )
    print("[preflight] Pulling images required for setting up a Kubernetes cluster")
    print("[preflight] (TEST STAND-IN: no image is pulled, there is no registry here)")

    print(f'[certs] Using certificateDir folder "{PKI}"')
    ca = pem("CERTIFICATE", "ca-" + node)
    for name, content, mode in (
        ("ca.crt", ca, 0o644),
        ("ca.key", pem("RSA PRIVATE KEY", "ca"), 0o600),
        ("apiserver.crt", pem("CERTIFICATE", "apiserver"), 0o644),
        ("apiserver.key", pem("RSA PRIVATE KEY", "apiserver"), 0o600),
        ("sa.key", pem("RSA PRIVATE KEY", "sa"), 0o600),
        ("sa.pub", pem("PUBLIC KEY", "sa"), 0o644),
        ("front-proxy-ca.crt", pem("CERTIFICATE", "fp"), 0o644),
        ("etcd/ca.crt", pem("CERTIFICATE", "etcd"), 0o644),
    ):
        atomic_write(os.path.join(PKI, name), content, mode)
    server = f"https://{advertise}:{port}"
    print(f'[kubeconfig] Using kubeconfig folder "{K8S_DIR}"')
    for name, user in (
        ("admin.conf", "kubernetes-admin"),
        ("super-admin.conf", "kubernetes-super-admin"),
        ("kubelet.conf", "system:node:" + node),
        ("controller-manager.conf", "system:kube-controller-manager"),
        ("scheduler.conf", "system:kube-scheduler"),
    ):
        atomic_write(os.path.join(K8S_DIR, name), kubeconfig(server, user, ca), 0o600)
        print(f'[kubeconfig] Writing "{name}" kubeconfig file')

    os.makedirs(MANIFESTS, exist_ok=True)
    apiserver = [
        "kube-apiserver",
        f"--advertise-address={advertise}",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--secure-port={port}",
        f"--service-cluster-ip-range={service_cidr}",
    ]
    cm = [
        "kube-controller-manager",
        "--bind-address=127.0.0.1",
        f"--kubeconfig={K8S_DIR}/controller-manager.conf",
        "--leader-elect=true",
        "--use-service-account-credentials=true",
    ]
    if pod_cidr:
        cm += ["--allocate-node-cidrs=true", f"--cluster-cidr={pod_cidr}"]
    cm.append(f"--service-cluster-ip-range={service_cidr}")
    scheduler = [
        "kube-scheduler",
        "--bind-address=127.0.0.1",
        f"--kubeconfig={K8S_DIR}/scheduler.conf",
        "--leader-elect=true",
    ]
    etcd = [
        "etcd",
        "--advertise-client-urls=https://127.0.0.1:2379",
        f"--data-dir={ETCD_DIR}",
        "--listen-client-urls=https://127.0.0.1:2379",
        f"--name={node}",
    ]
    print(f'[etcd] Creating static Pod manifest for local etcd in "{MANIFESTS}"')
    for name, command in (
        ("etcd", etcd),
        ("kube-apiserver", apiserver),
        ("kube-controller-manager", cm),
        ("kube-scheduler", scheduler),
    ):
        atomic_write(os.path.join(MANIFESTS, name + ".yaml"), static_pod(name, command))
        if name != "etcd":
            print(f'[control-plane] Creating static Pod manifest for "{name}"')

    kubeadm_args = [
        f"--container-runtime-endpoint={endpoint}",
        f"--pod-infra-container-image={PAUSE_IMAGE}",
    ]
    if node != hostname():
        kubeadm_args.append(f"--hostname-override={node}")
    print(
        f'[kubelet-start] Writing kubelet environment file with flags to file "{KUBEADM_FLAGS_ENV}"'
    )
    atomic_write(KUBEADM_FLAGS_ENV, 'KUBELET_KUBEADM_ARGS="{}"\n'.format(" ".join(kubeadm_args)))
    print(f'[kubelet-start] Writing kubelet configuration to file "{KUBELET_CONFIG}"')
    dns = str(ipaddress.ip_network(service_cidr, strict=False).network_address + 10)
    atomic_write(KUBELET_CONFIG, KUBELET_CONFIG_YAML.format(dns=dns))
    print("[kubelet-start] Starting the kubelet")
    subprocess.run(["systemctl", "restart", "kubelet"])

    timeout = float(os.environ.get("STANDIN_KUBEADM_TIMEOUT", "120"))
    print(
        "[wait-control-plane] Waiting for the kubelet to boot up the control plane as static "
        f'Pods from directory "{MANIFESTS}"'
    )
    print(
        "[kubelet-check] Waiting for a healthy kubelet at http://127.0.0.1:10248/healthz. "
        "This can take up to 4m0s"
    )
    started = time.time()
    while not tcp_accepts("127.0.0.1", 10248):
        if time.time() - started > timeout:
            raise KubeadmExit(
                1,
                "[kubelet-check] The kubelet is not healthy after 4m0s\n\n"
                "Unfortunately, an error has occurred, likely caused by:\n"
                "\t- The kubelet is not running\n\t- The kubelet is unhealthy due to "
                "a misconfiguration of the node in some way (required cgroups "
                "disabled)\n\nerror execution phase wait-control-plane: "
                "could not initialize a Kubernetes cluster",
            )
        time.sleep(0.5)
    print(f"[kubelet-check] The kubelet is healthy after {time.time() - started:.3f}s")
    print("[api-check] Waiting for a healthy API server. This can take up to 4m0s")
    while not apiserver_up(advertise, port):
        if time.time() - started > timeout:
            raise KubeadmExit(
                1,
                "[api-check] The API server is not healthy after 4m0s\n"
                "error execution phase wait-control-plane: could not initialize "
                "a Kubernetes cluster",
            )
        time.sleep(0.5)
    print(f"[api-check] The API server is healthy after {time.time() - started:.3f}s")
    with State() as state:
        state["configmaps"]["kubeadm-config"] = {
            "kubernetesVersion": version,
            "podSubnet": pod_cidr,
            "serviceSubnet": service_cidr,
            "controlPlaneEndpoint": f"{advertise}:{port}",
        }
    print(
        '[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the '
        '"kube-system" Namespace'
    )
    print(
        f"[mark-control-plane] Marking the node {node} as control-plane by adding the labels: "
        f"[{CONTROL_PLANE} node.kubernetes.io/exclude-from-external-load-balancers]"
    )
    print(
        f"[mark-control-plane] Marking the node {node} as control-plane by adding the taints "
        f"[{CONTROL_PLANE}:NoSchedule]"
    )
    while True:  # the kubelet registers the node; kubeadm then marks it
        with State() as state:
            obj = state["nodes"].get(node)
            if obj is not None:
                labels = obj["metadata"]["labels"]
                labels[CONTROL_PLANE] = ""
                labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
                taints = obj["spec"].setdefault("taints", [])
                if not any(t["key"] == CONTROL_PLANE for t in taints):
                    taints.append({"key": CONTROL_PLANE, "effect": "NoSchedule"})
                break
        if time.time() - started > timeout:
            raise KubeadmExit(
                1,
                "error execution phase mark-control-plane: timed out waiting "
                f'for the condition (node "{node}" never registered)',
            )
        time.sleep(0.5)
    token = token or f"{os.urandom(3).hex()}.{os.urandom(8).hex()}"
    print("[bootstrap-token] Using token: <hidden>")
    print("[addons] Applied essential addon: CoreDNS")
    print("[addons] Applied essential addon: kube-proxy")
    print("\nYour Kubernetes control-plane has initialized successfully!\n")
    digest = hashlib.sha256(ca.encode()).hexdigest()
    print(
        f"kubeadm join {advertise}:{port} --token {token} \\\n"
        f"\t--discovery-token-ca-cert-hash sha256:{digest}"
    )
    return 0


def clear_dir(path):
    if not os.path.isdir(path):
        return
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            os.unlink(full)


def kubeadm_reset(args):
    opts, _ = parse_flags(args, RESET_FLAGS, shorthands={"f": "force"})
    if not opts.get("force"):
        sys.stdout.write("[reset] Are you sure you want to proceed? [y/N]: ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise KubeadmExit(1, "aborted reset operation")
    print("[preflight] Running pre-flight checks")
    print("[reset] Stopping the kubelet service")
    subprocess.run(["systemctl", "stop", "kubelet"])
    for d in (KUBELET_DIR, ETCD_DIR, MANIFESTS, PKI):
        clear_dir(d)
    for f in (
        "admin.conf",
        "super-admin.conf",
        "kubelet.conf",
        "bootstrap-kubelet.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(K8S_DIR, f))
    with State() as state:
        state.clear()
    print(
        "The reset process does not clean CNI configuration. To do so, you must remove "
        "/etc/cni/net.d"
    )
    return 0


TOKEN_FLAGS = {
    "print-join-command": "bool",
    "ttl": "str",
    "description": "str",
    "groups": "list",
    "usages": "list",
    "kubeconfig": "str",
    "certificate-key": "str",
    "config": "str",
}


def kubeadm_token(args):
    """`kubeadm token create [TOKEN] [--ttl D] [--print-join-command]`, as v1.31
    prints it: the join line on one line."""
    opts, positionals = parse_flags(args, TOKEN_FLAGS)
    if positionals[:1] != ["create"]:
        raise KubeadmExit(1, "kubeadm stand-in: only `token create` is implemented")
    token = positionals[1] if len(positionals) > 1 else None
    if token is not None and not re.match(r"^[a-z0-9]{6}\.[a-z0-9]{16}$", token):
        raise KubeadmExit(
            1, f'the bootstrap token "{token}" was not of the form "[a-z0-9]{{6}}.[a-z0-9]{{16}}"'
        )
    admin = opts.get("kubeconfig", ADMIN_CONF)
    if not os.path.exists(admin):
        raise KubeadmExit(
            1, f"failed to load admin kubeconfig: open {admin}: no such file or directory"
        )
    host, port = server_hostport(kubeconfig_server(admin) or "")
    if not apiserver_up(host, port):
        raise KubeadmExit(1, "timed out waiting for the condition")
    token = token or f"{os.urandom(3).hex()}.{os.urandom(8).hex()}"
    with State() as state:
        state.setdefault("bootstrap_tokens", []).append(token)
    if not opts.get("print-join-command"):
        print(token)
        return 0
    with open(PKI + "/ca.crt") as fh:
        digest = hashlib.sha256(fh.read().encode()).hexdigest()
    print(f"kubeadm join {host}:{port} --token {token} --discovery-token-ca-cert-hash sha256:{digest} ")
    return 0


# ==========================================================================
# kubelet

KUBELET_FLAGS = {
    name: "str"
    for name in (
        "bootstrap-kubeconfig",
        "cert-dir",
        "cgroup-driver",
        "cgroup-root",
        "cluster-dns",
        "cluster-domain",
        "config",
        "config-dir",
        "container-runtime-endpoint",
        "eviction-hard",
        "feature-gates",
        "hostname-override",
        "image-service-endpoint",
        "kube-reserved",
        "kubeconfig",
        "log-file",
        "max-pods",
        "node-ip",
        "node-labels",
        "pod-infra-container-image",
        "pod-manifest-path",
        "provider-id",
        "register-with-taints",
        "resolv-conf",
        "root-dir",
        "runtime-request-timeout",
        "system-reserved",
        "v",
        "vmodule",
    )
}
KUBELET_FLAGS.update({"fail-swap-on": "bool", "version": "bool", "help": "bool"})


class Kubelet:
    def __init__(self, flags):
        self.flags = flags
        self.listeners = {}
        self.node = (flags.get("hostname-override") or hostname()).lower()
        self.api_up_since = None

    def start_checks(self):
        """What makes the real kubelet v1.31 exit at start-up."""
        path = self.flags.get("config", "")
        config = {}
        if path:
            if not os.path.exists(path):
                klog_fail(
                    f"failed to load kubelet config file, path: {path}, error: failed to "
                    f"load Kubelet config file {path}, error failed to read kubelet config "
                    f'file "{path}", error: open {path}: no such file or directory'
                )
            config = read_simple_yaml(path)
        self.static_pod_path = self.flags.get("pod-manifest-path") or config.get(
            "staticPodPath", ""
        )
        self.cgroup_driver = (
            self.flags.get("cgroup-driver") or config.get("cgroupDriver") or ("cgroupfs")
        )
        if self.cgroup_driver not in ("cgroupfs", "systemd"):
            klog_fail(f'failed to run Kubelet: invalid cgroup driver "{self.cgroup_driver}"')
        fail_swap_on = self.flags.get("fail-swap-on", config.get("failSwapOn", "true") != "false")
        if fail_swap_on and swap_devices():
            klog_fail(
                "failed to run Kubelet: running with swap on is not supported, please "
                "disable swap or set --fail-swap-on flag to false"
            )
        self.endpoint = (
            self.flags.get("container-runtime-endpoint")
            or config.get("containerRuntimeEndpoint")
            or DEFAULT_ENDPOINT
        )
        problem = cri_problem(self.endpoint)
        if problem:
            klog_fail(f"failed to run Kubelet: validate service connection: {problem}")
        # KubeletCgroupDriverFromCRI (beta, on): containerd 1.6 has no RuntimeConfig RPC,
        # so the kubelet keeps its own setting, as v1.31 does.
        glog(
            "I",
            f'"Using cgroup driver setting received from the CRI runtime is not '
            f'supported by the runtime; using the kubelet config" cgroupDriver="{self.cgroup_driver}"',
        )
        if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            # failCgroupV1 defaults to true from 1.35 (KEP-5573); the message is the
            # one kubelet 1.35 logs (kubernetes/node-problem-detector#1161)
            fail_v1 = str(config.get("failCgroupV1", "true")).lower() != "false"
            if minor_of(VERSION) >= (1, 35) and fail_v1:
                klog_fail(
                    "failed to validate kubelet configuration, error: kubelet is configured "
                    "to not run on a host using cgroup v1. cgroup v1 support is unsupported "
                    "and will be removed in a future release"
                )
            glog("W", '"cgroup v1 support is in maintenance mode, please migrate to cgroup v2"')
        self.kubeconfig = self.flags.get("kubeconfig", "")
        try:
            self.listeners["kubelet"] = listen_tcp("0.0.0.0", 10250)
            self.listeners["healthz"] = listen_tcp("127.0.0.1", 10248)
        except OSError as exc:
            klog_fail(f"failed to run Kubelet: listen tcp: bind: {exc.strerror.lower()}")

    def serve_forever(self):
        self._serve(self.listeners["kubelet"], b"")
        self._serve(self.listeners["healthz"], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        glog("I", f'"Kubelet version" kubeletVersion="{VERSION}"')
        while True:
            self.sync_static_pods()
            self.sync_node()
            kubelet_sync_pods(self.node)
            time.sleep(2)

    @staticmethod
    def _serve(sock, reply):
        def accept():
            while True:
                conn, _ = sock.accept()
                with contextlib.suppress(OSError):
                    if reply.startswith(b"HTTP"):
                        conn.settimeout(1)
                        conn.recv(4096)
                    if reply:
                        conn.sendall(reply)
                conn.close()

        threading.Thread(target=accept, daemon=True).start()

    def sync_static_pods(self):
        wanted = {}
        if self.static_pod_path and os.path.isdir(self.static_pod_path):
            for name in os.listdir(self.static_pod_path):
                if name in STATIC_PODS:
                    ports = list(STATIC_PODS[name])
                    m = re.search(
                        r"--secure-port=(\d+)", read_text(os.path.join(self.static_pod_path, name))
                    )
                    if m:
                        ports = [(ports[0][0], int(m.group(1)))]
                    wanted[name] = ports
        for name in [n for n in self.listeners if n in STATIC_PODS and n not in wanted]:
            for sock in self.listeners.pop(name):
                sock.close()
        for name, ports in wanted.items():
            if name in self.listeners:
                continue
            try:
                socks = [listen_tcp(host, port) for host, port in ports]
            except OSError as exc:
                glog("E", f'"static pod {name}: bind: {exc.strerror.lower()}" (CrashLoopBackOff)')
                continue
            self.listeners[name] = socks
            banner = APISERVER_BANNER + b"\n" if name == "kube-apiserver.yaml" else b""
            for sock in socks:
                self._serve(sock, banner)
            glog("I", f'"static pod running" pod="kube-system/{name[:-5]}-{self.node}"')

    def node_ready(self):
        if not unix_accepts(unix_path(self.endpoint)):
            return ("False", "KubeletNotReady", "container runtime is down")
        confs = (
            [f for f in os.listdir(CNI_CONF_DIR) if f.endswith((".conf", ".conflist", ".json"))]
            if os.path.isdir(CNI_CONF_DIR)
            else []
        )
        if not confs:
            return (
                "False",
                "KubeletNotReady",
                "container runtime network not ready: "
                "NetworkReady=false reason:NetworkPluginNotReady message:Network plugin "
                "returns error: cni plugin not initialized",
            )
        return ("True", "KubeletReady", "kubelet is posting ready status")

    def sync_node(self):
        if not self.kubeconfig or not os.path.exists(self.kubeconfig):
            return
        server = kubeconfig_server(self.kubeconfig)
        if not server or not apiserver_up(*server_hostport(server)):
            self.api_up_since = None
            glog(
                "E",
                f'"Unable to register node with API server" node="{self.node}" '
                "err=connection refused",
            )
            return
        self.api_up_since = self.api_up_since or time.time()
        ready = self.node_ready()
        now = now_iso()
        new = None
        if self.node not in read_state()["nodes"]:
            new = self.new_node(now)
        with State() as state:
            node = state["nodes"].get(self.node)
            if node is None:
                node = state["nodes"][self.node] = new
                glog("I", f'"Successfully registered node" node="{self.node}"')
            cond = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
            if cond["status"] != ready[0]:
                cond["lastTransitionTime"] = now
            cond.update(status=ready[0], reason=ready[1], message=ready[2], lastHeartbeatTime=now)
            state["heartbeats"][self.node] = time.time()
            # standing in for the controller-manager's service account controller
            accounts = state.setdefault("serviceaccounts", {})
            if time.time() - self.api_up_since >= SERVICE_ACCOUNT_DELAY:
                for ns in ("default", "kube-system"):
                    accounts.setdefault(
                        f"{ns}/default", {"uid": new_uid(), "creationTimestamp": now}
                    )

    def new_node(self, now):
        route = default_route()
        addresses = [{"type": "Hostname", "address": self.node}]
        if route:
            addresses.insert(
                0, {"type": "InternalIP", "address": self.flags.get("node-ip", route[1])}
            )
        spec = {}
        cm = os.path.join(self.static_pod_path or MANIFESTS, "kube-controller-manager.yaml")
        if os.path.exists(cm):
            text = read_text(cm)
            cidr = re.search(r"--cluster-cidr=(\S+)", text)
            if "--allocate-node-cidrs=true" in text and cidr:
                net = ipaddress.ip_network(cidr.group(1), strict=False)
                spec["podCIDR"] = str(next(net.subnets(new_prefix=24)))
                spec["podCIDRs"] = [spec["podCIDR"]]
        pressure = [
            {
                "type": kind,
                "status": "False",
                "reason": f"KubeletHas{reason}",
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
            for kind, reason, message in (
                ("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
                ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"),
            )
        ]
        ready = {
            "type": "Ready",
            "status": "False",
            "reason": "KubeletNotReady",
            "message": "",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "uid": new_uid(),
                "creationTimestamp": now,
                "labels": {
                    "beta.kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                },
                "annotations": {"kubeadm.alpha.kubernetes.io/cri-socket": self.endpoint},
            },
            "spec": spec,
            "status": {
                "addresses": addresses,
                "conditions": pressure + [ready],
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": VERSION,
                    "kubeProxyVersion": VERSION,
                    "containerRuntimeVersion": runtime_version(self.endpoint),
                    **node_boot_info(),
                },
            },
        }


def kubelet_main(args):
    try:
        flags, positionals = parse_flags(args, KUBELET_FLAGS)
    except FlagError as exc:
        klog_fail(f"failed to parse kubelet flag: {exc}")
    if flags.get("version"):
        print(f"Kubernetes {VERSION}")
        return 0
    if positionals:
        klog_fail(f"unknown command {positionals[0]}")
    set_process_name("kubelet")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    kubelet = Kubelet(flags)
    kubelet.start_checks()
    kubelet.serve_forever()
    return 0


# ==========================================================================
# kubectl

KUBECTL_FLAGS = {
    "kubeconfig": "str",
    "namespace": "str",
    "output": "str",
    "server": "str",
    "v": "str",
    "request-timeout": "str",
    "all": "bool",
    "overwrite": "bool",
    "client": "bool",
    "no-headers": "bool",
    "filename": "list",
    "dry-run": "str",
    "all-namespaces": "bool",
}
KUBECTL_SHORT = {
    "n": "namespace",
    "o": "output",
    "s": "server",
    "f": "filename",
    "v": "v",
    "A": "all-namespaces",
}
NODE_WORDS = ("nodes", "node", "no")
RUNTIMECLASS_WORDS = (
    "runtimeclasses",
    "runtimeclass",
    "runtimeclass.node.k8s.io",
    "runtimeclasses.node.k8s.io",
)


class KubectlExit(Exception):
    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code
        self.message = message


def kubectl_main(args):
    try:
        flags, words = parse_flags(args, KUBECTL_FLAGS, normalize=False, shorthands=KUBECTL_SHORT)
        if len(words) >= 2 and "/" in words[1]:  # kubectl get node/NAME
            words[1:2] = words[1].split("/", 1)
        if not words:
            raise KubectlExit(
                "kubectl controls the Kubernetes cluster manager (TEST STAND-IN "
                "of v1.31): get, taint, annotate, label, apply, version"
            )
        verb = words[0]
        if verb == "version":
            return kubectl_version(flags)
        if verb in ("drain", "cordon", "uncordon"):
            connect(flags)
            return kubectl_drain(flags, verb, words[1:])
        if verb == "apply":
            connect(flags)
            return kubectl_apply(flags)
        kind = words[1] if len(words) > 1 else ""
        if kind in NODE_WORDS and verb in ("get", "taint", "annotate", "label"):
            connect(flags)
            if verb == "get":
                return kubectl_get(flags, "nodes", words[2:])
            if verb == "taint":
                return kubectl_taint(flags, words[2:])
            return kubectl_set_metadata(flags, words[2:], verb)
        if kind in RUNTIMECLASS_WORDS and verb == "get":
            connect(flags)
            return kubectl_get(flags, "runtimeclasses", words[2:])
        handled = kubectl_pods(flags, words)
        if handled is not None:
            return handled
        raise KubectlExit("kubectl stand-in: not implemented: {}".format(" ".join(words)))
    except FlagError as exc:
        print(f"error: {exc}\nSee 'kubectl --help' for usage.", file=sys.stderr)
        return 1
    except KubectlExit as exc:
        print(exc.message, file=sys.stderr)
        return exc.code


def connect(flags):
    """Find the API server like kubectl does, and fail like it when it cannot be reached."""
    path = (
        flags.get("kubeconfig")
        or os.environ.get("KUBECONFIG")
        or os.path.expanduser("~/.kube/config")
    )
    server = flags.get("server")
    if not server:
        if os.path.exists(path):
            server = kubeconfig_server(path) or "localhost:8080"
        elif flags.get("kubeconfig"):
            raise KubectlExit(f"error: stat {path}: no such file or directory")
        else:
            server = "localhost:8080"
    host, port = server_hostport(server)
    if not tcp_accepts(host, port) or not apiserver_up(host, port):
        raise KubectlExit(
            f"The connection to the server {host}:{port} was refused - did you "
            "specify the right host or port?"
        )


def node_view(node, heartbeats):
    """A node as the API server returns it: Ready goes Unknown when the kubelet stops posting."""
    node = json.loads(json.dumps(node))
    if time.time() - heartbeats.get(node["metadata"]["name"], 0) > 40:
        for cond in node["status"]["conditions"]:
            cond.update(
                status="Unknown",
                reason="NodeStatusUnknown",
                message="Kubelet stopped posting node status.",
            )
    return node


def kubectl_get(flags, resource, names):
    state = read_state()
    if resource == "nodes":
        objects = {n: node_view(o, state["heartbeats"]) for n, o in state["nodes"].items()}
        group = "nodes"
    else:
        objects = dict(state.get("runtimeclasses", {}))
        group = "runtimeclasses.node.k8s.io"
    for name in names:
        if name not in objects:
            raise KubectlExit(f'Error from server (NotFound): {group} "{name}" not found')
    items = [objects[n] for n in (names or sorted(objects))]
    output = flags.get("output", "")
    if output == "json":
        if len(names) == 1:
            print(json.dumps(items[0], indent=4))
        else:
            print(
                json.dumps(
                    {
                        "apiVersion": "v1",
                        "items": items,
                        "kind": "List",
                        "metadata": {"resourceVersion": ""},
                    },
                    indent=4,
                )
            )
    elif output == "name":
        prefix = "node" if resource == "nodes" else "runtimeclass.node.k8s.io"
        for obj in items:
            print(f"{prefix}/{obj['metadata']['name']}")
    elif output in ("", "wide"):
        if not items:
            print("No resources found", file=sys.stderr)
            return 0
        if resource == "nodes":
            rows = [("NAME", "STATUS", "ROLES", "AGE", "VERSION")]
            for n in items:
                ready = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
                roles = (
                    ",".join(
                        k.split("/", 1)[1]
                        for k in n["metadata"]["labels"]
                        if k.startswith("node-role.kubernetes.io/")
                    )
                    or "<none>"
                )
                rows.append(
                    (
                        n["metadata"]["name"],
                        "Ready" if ready["status"] == "True" else "NotReady",
                        roles,
                        "1m",
                        n["status"]["nodeInfo"]["kubeletVersion"],
                    )
                )
        else:
            rows = [("NAME", "HANDLER", "AGE")]
            rows += [(o["metadata"]["name"], o["handler"], "1m") for o in items]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows[1 if flags.get("no-headers") else 0 :]:
            print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    else:
        raise KubectlExit(f"error: kubectl stand-in: output format {output!r} not implemented")
    return 0


def kubectl_taint(flags, words):
    targets, specs = (None, words) if flags.get("all") else (words[:1], words[1:])
    if not specs or targets == []:
        raise KubectlExit("error: at least one taint update is required")
    with State() as state:
        for name in targets if targets is not None else sorted(state["nodes"]):
            node = state["nodes"].get(name)
            if node is None:
                raise KubectlExit(f'Error from server (NotFound): nodes "{name}" not found')
            taints = node["spec"].setdefault("taints", [])
            for spec in specs:
                m = re.match(
                    r"^([^=:]+?)(?:=([^:]*))?(?::(NoSchedule|PreferNoSchedule|"
                    r"NoExecute))?(-?)$",
                    spec,
                )
                if not m or (not m.group(4) and not m.group(3)):
                    raise KubectlExit(f"error: invalid taint spec: {spec}")
                key, value, effect, remove = m.groups()
                if remove:
                    keep = [
                        t
                        for t in taints
                        if not (t["key"] == key and (not effect or t["effect"] == effect))
                    ]
                    if len(keep) == len(taints):
                        raise KubectlExit(f'error: taint "{spec[:-1]}" not found')
                    taints[:] = keep
                    continue
                same = [t for t in taints if t["key"] == key and t["effect"] == effect]
                if same and not flags.get("overwrite"):
                    raise KubectlExit(
                        f"error: node {name} already has {key} taint(s) with same "
                        "effect(s) and --overwrite is false"
                    )
                taints[:] = [t for t in taints if t not in same]
                taints.append({"key": key, "effect": effect, **({"value": value} if value else {})})
            if not taints:
                node["spec"].pop("taints")
            untainted = all(s.endswith("-") for s in specs)
            print(f"node/{name} {'untainted' if untainted else 'tainted'}")
    return 0


def kubectl_set_metadata(flags, words, verb):
    field = "annotations" if verb == "annotate" else "labels"
    targets, specs = (None, words) if flags.get("all") else (words[:1], words[1:])
    if not specs or targets == []:
        raise KubectlExit(f"error: at least one {field[:-1]} update is required")
    with State() as state:
        for name in targets if targets is not None else sorted(state["nodes"]):
            node = state["nodes"].get(name)
            if node is None:
                raise KubectlExit(f'Error from server (NotFound): nodes "{name}" not found')
            meta = node["metadata"].setdefault(field, {})
            for spec in specs:
                if spec.endswith("-") and "=" not in spec:
                    meta.pop(spec[:-1], None)
                    continue
                key, equals, value = spec.partition("=")
                if not equals or not key:
                    raise KubectlExit(f"error: invalid {field[:-1]} format: {spec}")
                if key in meta and meta[key] != value and not flags.get("overwrite"):
                    raise KubectlExit(
                        f"error: '{key}' already has a value ({meta[key]}), and "
                        "--overwrite is false"
                    )
                meta[key] = value
            print(f"node/{name} {'annotated' if verb == 'annotate' else 'labeled'}")
    return 0


QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti|Pi|Ei)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def kubectl_apply(flags):
    files = flags.get("filename", [])
    if files != ["-"]:
        raise KubectlExit("kubectl stand-in: only `apply -f -` (stdin) is implemented")
    dry_run = flags.get("dry-run", "none")
    if dry_run not in ("none", "server", "client"):
        raise KubectlExit(
            f'error: Invalid dry-run value ({dry_run}). Must be "none", "server", or "client".'
        )
    try:
        docs = [d for d in parse_yaml_documents(sys.stdin.read()) if d]
    except (ValueError, IndexError, KeyError) as exc:
        raise KubectlExit(f"error: error parsing STDIN: {exc}") from None
    if not docs:
        raise KubectlExit("error: no objects passed to apply")
    for obj in docs:
        kind, api = obj.get("kind"), obj.get("apiVersion")
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            raise KubectlExit(
                "error: error when retrieving current configuration of:\nResource: "
                f'"{kind}" from "STDIN": resource name may not be empty'
            )
        if (kind, api) == ("RuntimeClass", "node.k8s.io/v1"):
            apply_runtime_class(obj, name, dry_run, flags.get("output", ""))
        elif (kind, api) == ("Pod", "v1"):
            apply_pod(obj, name, dry_run, flags.get("output", ""))
        elif kind == "RuntimeClass":
            raise KubectlExit(
                f'error: resource mapping not found for name: "{name}" namespace: '
                f'"" from "STDIN": no matches for kind "RuntimeClass" in version '
                f'"{api}"\nensure CRDs are installed first'
            )
        else:
            raise KubectlExit(f"kubectl stand-in: apply of {api} {kind} is not implemented")
    return 0


def apply_runtime_class(obj, name, dry_run, output):
    handler = obj.get("handler")
    problems = []
    if not isinstance(handler, str) or not DNS_LABEL.match(handler):
        problems.append(
            f'handler: Invalid value: "{handler}": a lowercase RFC 1123 label '
            "must consist of lower case alphanumeric characters or '-'"
        )
    overhead = (obj.get("overhead") or {}).get("podFixed") or {}
    for resource, quantity in overhead.items():
        if not QUANTITY.match(str(quantity)):
            problems.append(
                f'overhead.podFixed[{resource}]: Invalid value: "{quantity}": '
                "must be a valid quantity"
            )
    with State() as state:
        classes = state.setdefault("runtimeclasses", {})
        old = classes.get(name)
        if old is not None and old["handler"] != handler:
            problems.append(f'handler: Invalid value: "{handler}": field is immutable')
        if problems:
            raise KubectlExit(f'The RuntimeClass "{name}" is invalid: ' + "; ".join(problems))
        meta = dict(obj.get("metadata") or {})
        applied = json.dumps(obj, sort_keys=True, separators=(",", ":"))
        meta["annotations"] = dict(
            meta.get("annotations") or {},
            **{"kubectl.kubernetes.io/last-applied-configuration": applied},
        )
        new = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "handler": handler}
        if overhead:
            new["overhead"] = {"podFixed": {k: str(v) for k, v in overhead.items()}}
        if obj.get("scheduling"):
            new["scheduling"] = obj["scheduling"]
        if old is None:
            verb = "created"
            meta.update(uid=new_uid(), creationTimestamp=now_iso(), resourceVersion="1")
        else:
            same = {k: v for k, v in old.items() if k != "metadata"} == new and old["metadata"].get(
                "annotations"
            ) == meta["annotations"]
            verb = "unchanged" if same else "configured"
            meta.update(
                uid=old["metadata"]["uid"],
                creationTimestamp=old["metadata"]["creationTimestamp"],
                resourceVersion=str(int(old["metadata"]["resourceVersion"]) + (0 if same else 1)),
            )
        new["metadata"] = meta
        if dry_run == "none":
            classes[name] = new
    suffix = {"none": "", "server": " (server dry run)", "client": " (dry run)"}[dry_run]
    if output == "json":
        print(json.dumps(new, indent=4))
    else:
        print(f"runtimeclass.node.k8s.io/{name} {verb}{suffix}")


def apply_pod(obj, name, dry_run, output):
    if dry_run != "server":
        raise KubectlExit(
            "kubectl stand-in: `apply` of a pod is only a server dry run here "
            "(`create -f -` creates one)"
        )
    pod = admitted_pod(read_state(), obj, name)
    if output == "json":
        print(json.dumps(pod, indent=4))
    else:
        print(f"pod/{name} created (server dry run)")


def admitted_pod(state, obj, name):
    """The pod as the API server would store it: admitted (ServiceAccount, RuntimeClass)
    and defaulted; KubectlExit with the API server's refusal otherwise."""
    meta = dict(obj.get("metadata") or {})
    namespace = meta.get("namespace") or "default"
    spec = json.loads(json.dumps(obj.get("spec") or {}))
    prefix = (
        f'Error from server (Forbidden): error when creating "STDIN": pods "{name}" is forbidden: '
    )
    # admission, in the API server's order: ServiceAccount, then RuntimeClass
    account = spec.setdefault("serviceAccountName", "default")
    if f"{namespace}/{account}" not in state.get("serviceaccounts", {}):
        raise KubectlExit(
            prefix + f"error looking up service account {namespace}/{account}: "
            f'serviceaccount "{account}" not found'
        )
    wanted = spec.get("runtimeClassName")
    if wanted:
        runtime_class = state.get("runtimeclasses", {}).get(wanted)
        if runtime_class is None:
            raise KubectlExit(prefix + f'pod rejected: RuntimeClass "{wanted}" not found')
        fixed = (runtime_class.get("overhead") or {}).get("podFixed")
        if fixed:
            if spec.get("overhead") and spec["overhead"] != fixed:
                raise KubectlExit(
                    prefix + "pod rejected: Pod's Overhead doesn't match "
                    "RuntimeClass's defined Overhead"
                )
            spec["overhead"] = dict(fixed)
    for container in spec.get("containers") or []:
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("resources", {})
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
    spec.update(
        {
            k: v
            for k, v in (
                ("dnsPolicy", "ClusterFirst"),
                ("enableServiceLinks", True),
                ("preemptionPolicy", "PreemptLowerPriority"),
                ("priority", 0),
                ("restartPolicy", "Always"),
                ("schedulerName", "default-scheduler"),
                ("securityContext", {}),
                ("serviceAccount", account),
                ("terminationGracePeriodSeconds", 30),
                (
                    "tolerations",
                    [
                        {
                            "effect": "NoExecute",
                            "key": key,
                            "operator": "Exists",
                            "tolerationSeconds": 300,
                        }
                        for key in (
                            "node.kubernetes.io/not-ready",
                            "node.kubernetes.io/unreachable",
                        )
                    ],
                ),
            )
            if k not in spec
        }
    )
    meta.update(namespace=namespace, uid=new_uid(), creationTimestamp=now_iso())
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }
    return pod



# ==========================================================================
# pods: what `frakti-install verify` looks at
#
# kubectl: create -f - [-o json] of a Pod, get pods [-l SELECTOR] [-o json], logs,
# get events --field-selector, delete pod [--ignore-not-found], delete runtimeclass.
# The kubelet runs the pods bound to its node (spec.nodeName; there is no
# scheduler here): RuntimeClass -> handler, the handler looked up in the CRI
# configuration of the containerd that runs now, then the container's command
# run by the handler's runtime. Shapes and texts, and where they come from:
# - a missing RuntimeClass: the kubelet's runtimeclass manager returns the
#   API's NotFound for runtimeclasses.node.k8s.io, and the sandbox fails with
#   event Warning FailedCreatePodSandBox "Failed to create pod sandbox: %v"
#   (kubernetes/kubernetes pkg/kubelet/runtimeclass/runtimeclass_manager.go
#   LookupRuntimeHandler, pkg/kubelet/kuberuntime/kuberuntime_manager.go SyncPod);
#   the pod stays Pending, its container waiting with reason ContainerCreating
#   (kata-containers/kata-containers#10914, a `kubectl describe` of such a pod).
# - a handler containerd does not know: containerd's CRI answers RunPodSandbox
#   with "failed to get sandbox runtime: no runtime for %q is configured", the
#   default handler "" standing for default_runtime_name (containerd
#   pkg/cri/server/sandbox_run.go getSandboxRuntime, the 1.6/1.7 CRI; seen as
#   "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get
#   sandbox runtime: no runtime for "kata-qemu" is configured" in
#   kata-containers/kata-containers#6499). Like containerd, which reads its
#   files when it starts, the stand-in re-reads the configuration
#   (`containerd config dump`) only when containerd's process changed.
# - a runtime_type io.containerd.X.vN runs through the shim binary
#   containerd-shim-X-vN found on PATH (containerd's shim naming). runc's
#   (io.containerd.runc.v2) runs the command on this host. Any other shim is
#   asked with the stand-in-only subcommand `standin-run -- ARGV...` (the Kata
#   stand-in, standins/kata.sh, runs ARGV in its "guest": the guest kernel's
#   release and a boot id of its own). The text of a missing shim binary is
#   not confirmed from a source.
# - nodeInfo.bootID and kernelVersion: the host's /proc/sys/kernel/random/boot_id
#   and `uname -r` (Kubernetes API NodeSystemInfo; docs/upstream-facts.md).
# - logs of a container not started: "container %q in pod %q is waiting to
#   start: %s" (BadRequest), as kubectl prints the API server's refusal.

KUBECTL_FLAGS.update({"selector": "str", "field-selector": "str", "ignore-not-found": "bool"})
KUBECTL_SHORT["l"] = "selector"
POD_WORDS = ("pods", "pod", "po")
EVENT_WORDS = ("events", "event", "ev")
BOOT_ID = "/proc/sys/kernel/random/boot_id"
CRI_CONTAINERD = (  # where the CRI's containerd table is, config version 2 | 3
    'plugins."io.containerd.grpc.v1.cri".containerd',
    'plugins."io.containerd.cri.v1.runtime".containerd',
)
RUNC_TYPES = ("io.containerd.runc.v2", "io.containerd.runc.v1")
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
COMMAND_TIMEOUT = 60


def node_boot_info():
    return {"bootID": read_text(BOOT_ID).strip(), "kernelVersion": os.uname().release}


def _pods_namespace(flags):
    return flags.get("namespace") or "default"


def _matches(labels, selector):
    for term in filter(None, (selector or "").split(",")):
        key, eq, value = term.partition("=")
        if eq and (labels.get(key.rstrip("=!")) == value) == key.endswith("!"):
            return False
        if not eq and key.startswith("!") and key[1:] in labels:
            return False
        if not eq and not key.startswith("!") and key not in labels:
            return False
    return True


def _print_list(items):
    listing = {
        "apiVersion": "v1",
        "items": items,
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    }
    print(json.dumps(listing, indent=4))


def kubectl_pods(flags, words):
    """kubectl's verbs on pods, events and the deletion of a RuntimeClass; None when
    `words` is none of them."""
    verb, kind = words[0], (words[1] if len(words) > 1 else "")
    if verb == "create":
        connect(flags)
        return kubectl_create(flags)
    if verb == "get" and kind in POD_WORDS:
        connect(flags)
        return kubectl_get_pods(flags, words[2:])
    if verb == "get" and kind in EVENT_WORDS:
        connect(flags)
        return kubectl_get_events(flags)
    if verb == "logs":
        connect(flags)
        return kubectl_logs(flags, words[1:])
    if verb == "delete" and kind in POD_WORDS:
        connect(flags)
        return kubectl_delete(flags, "pods", words[2:])
    if verb == "delete" and kind in RUNTIMECLASS_WORDS:
        connect(flags)
        return kubectl_delete(flags, "runtimeclasses", words[2:])
    return None


def kubectl_create(flags):
    if flags.get("filename", []) != ["-"]:
        raise KubectlExit("kubectl stand-in: only `create -f -` (stdin) is implemented")
    text = sys.stdin.read()
    try:
        docs = [json.loads(text)]
    except ValueError:
        try:
            docs = [d for d in parse_yaml_documents(text) if d]
        except (ValueError, IndexError, KeyError) as exc:
            raise KubectlExit(f"error: error parsing STDIN: {exc}") from None
    if not docs:
        raise KubectlExit("error: no objects passed to create")
    for obj in docs:
        kind, api = obj.get("kind"), obj.get("apiVersion")
        name = (obj.get("metadata") or {}).get("name")
        if (kind, api) != ("Pod", "v1"):
            raise KubectlExit(f"kubectl stand-in: create of {api} {kind} is not implemented")
        if not name or not DNS_SUBDOMAIN.match(name):
            raise KubectlExit(
                f'The Pod "{name or ""}" is invalid: metadata.name: Invalid value: "{name or ""}": '
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character"
            )
        with State() as state:
            pod = admitted_pod(state, obj, name)
            key = f"{pod['metadata']['namespace']}/{name}"
            pods = state.setdefault("pods", {})
            if key in pods:
                raise KubectlExit(
                    f'Error from server (AlreadyExists): error when creating "STDIN": '
                    f'pods "{name}" already exists'
                )
            state["resourceVersion"] = state.get("resourceVersion", 100) + 1
            pod["metadata"]["resourceVersion"] = str(state["resourceVersion"])
            pods[key] = pod
        if flags.get("output") == "json":
            print(json.dumps(pod, indent=4))
        else:
            print(f"pod/{name} created")
    return 0


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def kubectl_get_pods(flags, names):
    namespace = _pods_namespace(flags)
    pods = read_state().get("pods", {})
    for name in names:
        if f"{namespace}/{name}" not in pods:
            raise KubectlExit(f'Error from server (NotFound): pods "{name}" not found')
    if names:
        items = [pods[f"{namespace}/{name}"] for name in names]
    else:
        items = [
            pod
            for key, pod in sorted(pods.items())
            if key.split("/", 1)[0] == namespace
            and _matches(pod["metadata"].get("labels") or {}, flags.get("selector"))
        ]
    output = flags.get("output", "")
    if output == "json":
        if len(names) == 1:
            print(json.dumps(items[0], indent=4))
        else:
            _print_list(items)
    elif output in ("", "wide"):
        if not items:
            print(f"No resources found in {namespace} namespace.", file=sys.stderr)
            return 0
        rows = [("NAME", "READY", "STATUS", "RESTARTS", "AGE")]
        for pod in items:
            status = pod["status"]
            waiting = [
                (c.get("state") or {}).get("waiting", {}).get("reason")
                for c in status.get("containerStatuses") or []
            ]
            shown = next((w for w in waiting if w), None)
            phase = status.get("phase", "Pending")
            rows.append(
                (
                    pod["metadata"]["name"],
                    f"0/{len(pod['spec'].get('containers') or [])}",
                    shown or {"Succeeded": "Completed", "Failed": "Error"}.get(phase, phase),
                    "0",
                    "1m",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows[1 if flags.get("no-headers") else 0 :]:
            print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    else:
        raise KubectlExit(f"error: kubectl stand-in: output format {output!r} not implemented")
    return 0


def kubectl_get_events(flags):
    namespace = _pods_namespace(flags)
    wanted = {}
    for term in filter(None, (flags.get("field-selector") or "").split(",")):
        key, eq, value = term.partition("=")
        if not eq:
            raise KubectlExit(f'Error from server (BadRequest): invalid selector: "{term}"')
        wanted[key.lstrip("=")] = value.lstrip("=")

    def field(event, path):
        for part in path.split("."):
            event = event.get(part, {}) if isinstance(event, dict) else {}
        return event if isinstance(event, str) else ""

    items = [
        event
        for event in read_state().get("events", [])
        if event["metadata"]["namespace"] == namespace
        and all(field(event, k) == v for k, v in wanted.items())
    ]
    if flags.get("output") != "json":
        raise KubectlExit("kubectl stand-in: get events is only implemented with -o json")
    _print_list(items)
    return 0


def kubectl_logs(flags, words):
    if not words:
        raise KubectlExit("error: expected 'logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]'.")
    namespace, name = _pods_namespace(flags), words[0]
    state = read_state()
    pod = state.get("pods", {}).get(f"{namespace}/{name}")
    if pod is None:
        raise KubectlExit(f'Error from server (NotFound): pods "{name}" not found')
    container = (pod["spec"].get("containers") or [{}])[0].get("name", "")
    for status in pod["status"].get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting")
        if waiting is not None:
            raise KubectlExit(
                f'Error from server (BadRequest): container "{container}" in pod "{name}" '
                f"is waiting to start: {waiting.get('reason', 'ContainerCreating')}"
            )
    if not pod["status"].get("containerStatuses"):
        raise KubectlExit(
            f'Error from server (BadRequest): container "{container}" in pod "{name}" '
            "is waiting to start: ContainerCreating"
        )
    sys.stdout.write(state.get("podlogs", {}).get(pod["metadata"]["uid"], ""))
    return 0


def kubectl_delete(flags, resource, names):
    if not names:
        raise KubectlExit("error: resource(s) were provided, but no name was specified")
    namespace = _pods_namespace(flags)
    missing = []
    with State() as state:
        if resource == "pods":
            objects, shown, key = state.setdefault("pods", {}), "pod", lambda n: f"{namespace}/{n}"
        else:
            objects, shown = state.setdefault("runtimeclasses", {}), "runtimeclass.node.k8s.io"
            key = lambda n: n  # noqa: E731
        for name in names:
            gone = objects.pop(key(name), None)
            if gone is None:
                missing.append(name)
                continue
            if resource == "pods":
                state.setdefault("podlogs", {}).pop(gone["metadata"]["uid"], None)
            print(f'{shown} "{name}" deleted')
    if missing and not flags.get("ignore-not-found"):
        for name in missing:
            print(
                f'Error from server (NotFound): {resource}{"" if resource == "pods" else ".node.k8s.io"} "{name}" not found',
                file=sys.stderr,
            )
        return 1
    return 0


# --- the kubelet's side ----------------------------------------------------------
_LIVE_CRI = {}


def live_cri_runtimes():
    """(default_runtime_name, {handler: runtime_type}) of the running containerd, or
    None when containerd is not running; re-read when its process changed."""
    out = subprocess.run(
        ["systemctl", "show", "-p", "MainPID", "--value", "containerd"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    if not out or out == "0":
        return None
    stat = read_text(f"/proc/{out}/stat")
    key = (out, stat.rsplit(")", 1)[-1].split()[19] if stat else "")
    if key not in _LIVE_CRI:
        dump = containerd_dump()
        for table in CRI_CONTAINERD:
            prefix = f"{table}.runtimes."
            runtimes = {
                k[len(prefix) : -len(".runtime_type")]: v.strip('"')
                for k, v in dump.items()
                if k.startswith(prefix) and k.endswith(".runtime_type")
            }
            default = dump.get(f"{table}.default_runtime_name", "").strip('"')
            if runtimes or default:
                break
        _LIVE_CRI.clear()
        _LIVE_CRI[key] = (default, runtimes)
    return _LIVE_CRI[key]


def shim_binary(runtime_type):
    """containerd's shim binary name of a runtime type: io.containerd.kata.v2 ->
    containerd-shim-kata-v2."""
    parts = runtime_type.split(".")
    return f"containerd-shim-{parts[-2]}-{parts[-1]}" if len(parts) >= 2 else runtime_type


def _event(state, pod, kind, reason, message, node, now):
    """Record an event as the kubelet's recorder does (a repeat bumps count)."""
    events = state.setdefault("events", [])
    meta = pod["metadata"]
    for event in events:
        if event["involvedObject"]["uid"] == meta["uid"] and (
            event["reason"],
            event["message"],
        ) == (reason, message):
            event["count"] += 1
            event["lastTimestamp"] = now
            return
    events.append(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": meta["namespace"],
                "creationTimestamp": now,
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": node},
            "reportingComponent": "kubelet",
            "reportingInstance": node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
    )


def _sandbox_failure(state, pod):
    """Why the pod's sandbox cannot be created, as the kubelet's event says it, or
    (None, runtime_type)."""
    wanted = pod["spec"].get("runtimeClassName")
    handler = ""
    if wanted:
        runtime_class = state.get("runtimeclasses", {}).get(wanted)
        if runtime_class is None:
            return (
                f'Failed to create pod sandbox: runtimeclasses.node.k8s.io "{wanted}" not found',
                "",
            )
        handler = runtime_class["handler"]
    live = live_cri_runtimes()
    if live is None:
        return (
            "Failed to create pod sandbox: rpc error: code = Unavailable desc = connection "
            'error: desc = "transport: Error while dialing: dial unix '
            '/run/containerd/containerd.sock: connect: no such file or directory"'
        ), ""
    default, runtimes = live
    name = handler or default
    if name not in runtimes:
        return (
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get "
            f'sandbox runtime: no runtime for "{name}" is configured'
        ), ""
    runtime_type = runtimes[name]
    if (
        runtime_type not in RUNC_TYPES
        and shutil.which(shim_binary(runtime_type), path=HOST_PATH) is None
    ):
        return (
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create "
            f'containerd task: failed to create shim task: runtime "{runtime_type}" binary '
            f'not installed "{shim_binary(runtime_type)}": file does not exist: unknown'
        ), ""
    return None, runtime_type


def _run_container(pod, runtime_type):
    """(exit code, output) of the pod's first container, run by the runtime."""
    container = (pod["spec"].get("containers") or [{}])[0]
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if not argv:
        return 0, ""
    if runtime_type not in RUNC_TYPES:
        argv = [shutil.which(shim_binary(runtime_type), path=HOST_PATH), "standin-run", "--", *argv]
    env = {"PATH": HOST_PATH, "HOSTNAME": pod["metadata"]["name"]}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, cwd="/", env=env
        )
    except subprocess.TimeoutExpired:
        return 137, ""
    except OSError as exc:
        return 128, f"{exc}\n"
    return done.returncode, done.stdout + done.stderr


def kubelet_sync_pods(node):
    """Run the pods bound to this node that are still Pending, each once; a pod whose
    sandbox cannot be made stays Pending (retried each sync), as the kubelet does."""
    pending = [
        (key, pod)
        for key, pod in sorted(read_state().get("pods", {}).items())
        if pod["spec"].get("nodeName") == node and pod["status"].get("phase") == "Pending"
    ]
    for key, pod in pending:
        state = read_state()
        failure, runtime_type = _sandbox_failure(state, pod)
        code, output = (None, "") if failure else _run_container(pod, runtime_type)
        now = now_iso()
        with State() as state:
            current = state.get("pods", {}).get(key)
            if current is None or current["metadata"]["uid"] != pod["metadata"]["uid"]:
                continue  # deleted meanwhile
            status = current["status"]
            status.setdefault("startTime", now)
            status.setdefault("hostIP", (default_route() or (None, "127.0.0.1"))[1])
            container = (current["spec"].get("containers") or [{}])[0]
            base = {
                "name": container.get("name", ""),
                "image": container.get("image", ""),
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
            }
            deadline = current["spec"].get("activeDeadlineSeconds")
            if failure:
                _event(state, current, "Warning", "FailedCreatePodSandBox", failure, node, now)
                status["containerStatuses"] = [
                    dict(base, state={"waiting": {"reason": "ContainerCreating"}})
                ]
                status["conditions"] = _conditions(now, ready=False, reason="ContainersNotReady")
                started = time.mktime(time.strptime(status["startTime"], "%Y-%m-%dT%H:%M:%SZ"))
                if deadline and time.mktime(time.gmtime()) - started > int(deadline):
                    status.update(
                        phase="Failed",
                        reason="DeadlineExceeded",
                        message="Pod was active on the node longer than the specified deadline",
                    )
                continue
            container_id = (
                "containerd://" + hashlib.sha256(current["metadata"]["uid"].encode()).hexdigest()
            )
            _event(
                state, current, "Normal", "Created", f"Created container {base['name']}", node, now
            )
            _event(
                state, current, "Normal", "Started", f"Started container {base['name']}", node, now
            )
            terminated = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": now,
                "finishedAt": now_iso(),
                "containerID": container_id,
            }
            status["containerStatuses"] = [
                dict(base, containerID=container_id, state={"terminated": terminated})
            ]
            status["conditions"] = _conditions(now, ready=False, reason="PodCompleted")
            status["phase"] = "Succeeded" if code == 0 else "Failed"
            state.setdefault("podlogs", {})[current["metadata"]["uid"]] = output


def _conditions(now, ready, reason):
    def condition(kind, value, why=None):
        found = {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": now}
        return dict(found, reason=why) if why else found

    flag = "True" if ready else "False"
    return [
        condition("Initialized", "True"),
        condition("Ready", flag, None if ready else reason),
        condition("ContainersReady", flag, None if ready else reason),
        condition("PodScheduled", "True"),
    ]


# -------------------------------------------------------------------------- upgrades
# kubeadm upgrade plan|apply|node, kubectl version -o json, kubectl drain /
# cordon / uncordon, and the kubelet reporting the release it runs: what
# frakti-install's `upgrade` looks at. The cluster's release is the state's
# "version" (kubeadm upgrade apply sets it), else this program's VERSION.
UPGRADE_LOG = "/var/log/standin-kubeadm-upgrade.log"
UPGRADE_FLAGS = {
    "yes": "bool",
    "force": "bool",
    "dry-run": "bool",
    "config": "str",
    "ignore-preflight-errors": "list",
    "certificate-renewal": "bool",
    "etcd-upgrade": "bool",
    "kubeconfig": "str",
    "v": "str",
}
KUBECTL_FLAGS.update(
    {
        "ignore-daemonsets": "bool",
        "delete-emptydir-data": "bool",
        "delete-local-data": "bool",
        "force": "bool",
        "disable-eviction": "bool",
        "timeout": "str",
        "grace-period": "int",
        "pod-selector": "str",
    }
)


def version_parts(version):
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def cluster_version():
    return read_state().get("version") or VERSION


def upgrade_log(entry):
    with open(UPGRADE_LOG, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def kubeadm_upgrade(args):
    """kubeadm upgrade plan [VERSION], apply VERSION, node: the version policy of
    cmd/kubeadm/app/phases/upgrade/policy.go (EnforceVersionPolicies: mandatory and
    skippable errors, the latter bypassed by --force), the control plane's static
    pod manifests rewritten to the new image tags."""
    if not args or args[0] not in ("plan", "apply", "node"):
        raise KubeadmExit(1, 'unknown command for "kubeadm upgrade": use plan, apply, node, diff')
    sub = args[0]
    flags, words = parse_flags(args[1:], UPGRADE_FLAGS, shorthands={"y": "yes", "f": "force"})
    if sub == "node":
        return kubeadm_upgrade_node(flags)
    if not os.path.exists(ADMIN_CONF):
        raise KubeadmExit(
            1,
            f"[upgrade/config] FATAL: failed to load admin kubeconfig: open {ADMIN_CONF}: "
            "no such file or directory",
        )
    cluster = cluster_version()
    if sub == "apply" and not words:
        raise KubeadmExit(
            1,
            "[upgrade/version] FATAL: missing one or more required arguments. Required "
            "arguments: [version]",
        )
    wanted = words[0] if words else VERSION
    if not wanted.startswith("v"):
        wanted = "v" + wanted
    want, have, mine = version_parts(wanted), version_parts(cluster), version_parts(VERSION)
    mandatory, skippable = [], []
    if want[1] > have[1] + 1 or want[0] != have[0]:
        mandatory.append(
            f'Specified version to upgrade to "{wanted}" is too high; kubeadm can upgrade '
            "only 1 minor version at a time"
        )
    if want[:2] > mine[:2]:
        mandatory.append(
            f'Specified version to upgrade to "{wanted}" is at least one minor release higher '
            f"than the kubeadm minor release ({want[1]} > {mine[1]}). Such an upgrade is not "
            "supported"
        )
    elif want > mine:
        skippable.append(
            f'Specified version to upgrade to "{wanted}" is higher than the kubeadm version '
            f'"{VERSION}". Upgrade kubeadm first using the tool you used to install kubeadm'
        )
    if want[1] < have[1] - 1:
        mandatory.append(
            f'Specified version to downgrade to "{wanted}" is too low; kubeadm can downgrade '
            "only 1 minor version at a time"
        )
    if mine[:2] > want[:2]:
        skippable.append(
            f"Kubeadm version {VERSION} can only be used to upgrade to Kubernetes version "
            f"{mine[0]}.{mine[1]}"
        )
    kubelets = sorted(
        {
            (n.get("status", {}).get("nodeInfo") or {}).get("kubeletVersion", "")
            for n in read_state()["nodes"].values()
        }
        - {""}
    )
    old_kubelets = [k for k in kubelets if want[1] > version_parts(k)[1] + 1]
    if old_kubelets:
        skippable.append(
            "There are kubelets in this cluster that are too old that have these versions "
            f"[{' '.join(old_kubelets)}]"
        )
    print(f"[upgrade/versions] Cluster version: {cluster}")
    print(f"[upgrade/versions] kubeadm version: {VERSION}")
    if mandatory or (skippable and not flags.get("force")):
        errors = "".join(f"\t- {e}\n" for e in mandatory + skippable)
        raise KubeadmExit(
            1,
            "[upgrade/version] FATAL: the --version argument is invalid due to these "
            f"errors:\n\n{errors}\nCan be bypassed if you pass the --force flag"
            if not mandatory
            else "[upgrade/version] FATAL: the --version argument is invalid due to these "
            f"errors:\n\n{errors}",
        )
    upgrade_log({"command": sub, "argv": args, "cluster": cluster, "kubeadm": VERSION,
                 "target": wanted})  # fmt: skip
    if sub == "plan":
        print(
            "Components that must be upgraded manually after you have upgraded the control "
            "plane with 'kubeadm upgrade apply':\nCOMPONENT   NODE   CURRENT   TARGET\n"
            f"kubelet     {hostname()}   {cluster}   {wanted}\n\n"
            "Upgrade to the latest stable version:\n\nCOMPONENT   NODE   CURRENT   TARGET\n"
            f"kube-apiserver   {hostname()}   {cluster}   {wanted}\n\n"
            "You can now apply the upgrade by executing the following command:\n\n"
            f"\tkubeadm upgrade apply {wanted}\n"
        )
        return 0
    if not (flags.get("yes") or flags.get("force")):
        raise KubeadmExit(
            1,
            "[upgrade/apply] FATAL: won't proceed; the user didn't answer (Y|y) in order to "
            "continue",
        )
    print(f'[upgrade/version] You have chosen to change the cluster version to "{wanted}"')
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        path = os.path.join(MANIFESTS, component + ".yaml")
        text = read_text(path)
        if text:
            text = re.sub(rf"(image: \S*/{component}):\S+", rf"\g<1>:{wanted}", text)
            atomic_write(path, text, 0o600)
            print(f'[upgrade/staticpods] Component "{component}" upgraded successfully!')
    with State() as state:
        state["version"] = wanted
    print(
        f'[upgrade/successful] SUCCESS! Your cluster was upgraded to "{wanted}". Enjoy!\n\n'
        "[upgrade/kubelet] Now that your control plane is upgraded, please proceed with "
        "upgrading your kubelets if you haven't already done so."
    )
    return 0


def kubeadm_upgrade_node(flags):
    kubelet_conf = K8S_DIR + "/kubelet.conf"
    if not os.path.exists(kubelet_conf):
        raise KubeadmExit(
            1,
            f"couldn't create a Kubernetes client from file \"{kubelet_conf}\": failed to "
            f"load admin kubeconfig: open {kubelet_conf}: no such file or directory",
        )
    cluster = cluster_version()
    upgrade_log({"command": "node", "cluster": cluster, "kubeadm": VERSION})
    print("[upgrade] Reading configuration from the cluster...")
    print("[upgrade] Skipping phase. Not a control plane node.")
    print(f'[upgrade] Backing up kubelet config file to {KUBELET_CONFIG}')
    print("[upgrade] The configuration for this node was successfully updated!")
    print("[upgrade] Now you should go ahead and upgrade the kubelet package using your "
          "package manager.")  # fmt: skip
    return 0


def kubectl_version(flags):
    def info(version):
        major, minor, _ = version_parts(version)
        return {"major": str(major), "minor": str(minor), "gitVersion": version,
                "platform": "linux/amd64"}  # fmt: skip

    answer = {"clientVersion": info(VERSION), "kustomizeVersion": "v5.4.2"}
    error = None
    if not flags.get("client"):
        try:
            connect(flags)
            answer["serverVersion"] = info(cluster_version())
        except KubectlExit as exc:
            error = exc
    if flags.get("output") == "json":
        print(json.dumps(answer, indent=2))
    else:
        print(f"Client Version: {VERSION}\nKustomize Version: v5.4.2")
        if "serverVersion" in answer:
            print(f"Server Version: {answer['serverVersion']['gitVersion']}")
    if error is not None:
        raise error
    return 0


def kubeconfig_user(flags):
    path = flags.get("kubeconfig") or os.environ.get("KUBECONFIG") or ""
    m = re.search(r"^\s*user:\s*(\S+)", read_text(path) or "", re.M)
    return m.group(1) if m else ""


def kubectl_drain(flags, verb, words):
    """cordon/uncordon set spec.unschedulable; drain cordons, then evicts the node's
    pods the way kubectl's drain helper filters them (DaemonSet, unmanaged and
    emptyDir pods need --ignore-daemonsets, --force, --delete-emptydir-data)."""
    if not words:
        raise KubectlExit(f"error: USAGE: {verb} NODE [flags]")
    name = words[0]
    user = kubeconfig_user(flags)
    if user.startswith("system:node:"):
        raise KubectlExit(
            f'Error from server (Forbidden): nodes "{name}" is forbidden: User "{user}" '
            'cannot patch resource "nodes" in API group "" at the cluster scope'
        )
    pods = {}
    with State() as state:
        node = state["nodes"].get(name)
        if node is None:
            raise KubectlExit(f'Error from server (NotFound): nodes "{name}" not found')
        spec = node.setdefault("spec", {})
        if verb == "uncordon":
            was = spec.pop("unschedulable", False)
            print(f"node/{name} {'uncordoned' if was else 'already uncordoned'}")
            return 0
        was = spec.get("unschedulable", False)
        spec["unschedulable"] = True
        print(f"node/{name} {'already cordoned' if was else 'cordoned'}")
        if verb == "cordon":
            return 0
        all_pods = state.get("pods")
        if isinstance(all_pods, dict):
            pods = {k: p for k, p in all_pods.items()
                    if (p.get("spec") or {}).get("nodeName") == name}  # fmt: skip
        problems, evict = [], []
        for key, pod in sorted(pods.items()):
            owners = (pod.get("metadata") or {}).get("ownerReferences") or []
            volumes = (pod.get("spec") or {}).get("volumes") or []
            if any(o.get("kind") == "DaemonSet" for o in owners):
                if not flags.get("ignore-daemonsets"):
                    problems.append(("DaemonSet-managed Pods (use --ignore-daemonsets to "
                                     "ignore)", key))  # fmt: skip
                continue
            if not owners and not flags.get("force"):
                problems.append(("Pods declare no controller (use --force to override)", key))
            if any("emptyDir" in v for v in volumes) and not (
                flags.get("delete-emptydir-data") or flags.get("delete-local-data")
            ):
                problems.append(("Pods with local storage (use --delete-emptydir-data to "
                                 "override)", key))  # fmt: skip
            evict.append(key)
        if problems:
            kinds = sorted({p[0] for p in problems})
            raise KubectlExit(
                f"error: unable to drain node \"{name}\" due to error: cannot delete "
                + ", cannot delete ".join(
                    f"{k}: {', '.join(sorted(key for kk, key in problems if kk == k))}"
                    for k in kinds
                )
                + ", continuing command...\nThere are pending nodes to be drained:\n "
                + name
            )
        for key in evict:
            del state["pods"][key]
    for key in evict:
        print(f"evicting pod {key}")
        print(f"pod/{key.split('/', 1)[-1]} evicted")
    print(f"node/{name} drained")
    return 0


_sync_node_of_one_release = Kubelet.sync_node


def _sync_node_release(self):
    """As before; the node then reports the release of the kubelet that runs now."""
    _sync_node_of_one_release(self)
    node = read_state()["nodes"].get(self.node)
    if node is not None and node["status"].get("nodeInfo", {}).get("kubeletVersion") != VERSION:
        with State() as state:
            info = state["nodes"][self.node]["status"].setdefault("nodeInfo", {})
            info.update(kubeletVersion=VERSION, kubeProxyVersion=VERSION)


Kubelet.sync_node = _sync_node_release


if __name__ == "__main__":
    mains = {"kubeadm": kubeadm_main, "kubelet": kubelet_main, "kubectl": kubectl_main}
    sys.exit(mains[PROGRAM](sys.argv[1:]))
