#!/usr/bin/python3
# TEST STAND-IN, not Kubernetes. It imitates kubeadm, kubelet and kubectl
# (Kubernetes v1.12) for frakti-install's end-to-end tests, which cannot
# download the real binaries. build.py writes this file three times, as
# kubeadm, kubelet and kubectl, with PROGRAM and VERSION filled in.
#
# What it imitates is what an installer looks at: flags accepted, preflight
# checks and their error lines, files written by `kubeadm init` and removed by
# `kubeadm reset`, the kubelet refusing to start when the host is not ready,
# ports opened, the node object (podCIDR, taints, Ready) seen through kubectl.
# The "cluster" is one JSON file, /var/lib/standin-k8s/cluster.json.
# Static pods are ports the kubelet opens; other pods bound to the node run
# through its runtime (the "pods" section near the end).
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

from common import (  # build.py replaces this statement with common.py itself
    STATE_PATH,
    FlagError,
    State,
    atomic_write,
    default_route,
    fatal,
    find_processes,
    flag_value,
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
    unix_request,
)

PROGRAM = "@PROGRAM@"
VERSION = "@VERSION@"


K8S_DIR = "/etc/kubernetes"
MANIFESTS = K8S_DIR + "/manifests"
PKI = K8S_DIR + "/pki"
KUBELET_DIR = "/var/lib/kubelet"
KUBELET_CONFIG = KUBELET_DIR + "/config.yaml"
KUBEADM_FLAGS_ENV = KUBELET_DIR + "/kubeadm-flags.env"
ETCD_DIR = "/var/lib/etcd"
INIT_LOG = "/var/log/standin-kubeadm-init.log"
DOCKERSHIM_SOCKET = "/var/run/dockershim.sock"
MASTER_TAINT = {"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"}
STATIC_PODS = {  # manifest -> (address, default port) its container would listen on
    "kube-apiserver.yaml": ("0.0.0.0", 6443),
    "kube-controller-manager.yaml": ("127.0.0.1", 10252),
    "kube-scheduler.yaml": ("127.0.0.1", 10251),
    "etcd.yaml": ("127.0.0.1", 2379),
}
GIT = (
    f'GitVersion:"{VERSION}", GitCommit:"standin", GitTreeState:"clean", BuildDate:"2019-07-08T09:51:11Z", '
    'GoVersion:"go1.10.8", Compiler:"gc", Platform:"linux/amd64"'
)


def version_info():
    major, minor = VERSION.lstrip("v").split(".")[:2]
    return f'version.Info{{Major:"{major}", Minor:"{minor}", {GIT}}}'


def minor_of(version):
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def hostname():
    return socket.gethostname().lower()


def kubeconfig_server(path):
    with open(path) as fh:
        m = re.search(r"^\s*server:\s*(\S+)", fh.read(), re.M)
    return m.group(1) if m else None


def server_hostport(server):
    m = re.match(r"^(?:https?://)?\[?([^\]/]+?)\]?(?::(\d+))?/?$", server)
    if not m:
        return server, 443
    return m.group(1), int(m.group(2) or (443 if server.startswith("https") else 80))


APISERVER_BANNER = b"kube-apiserver stand-in " + VERSION.encode()


def apiserver_up(host, port):
    """True when the (stand-in) API server answers on host:port; any other listener is not one."""
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.settimeout(2)
            return s.recv(256).startswith(b"kube-apiserver stand-in")
    except OSError:
        return False


def runtime_status(endpoint):
    """The CRI runtime's answer (frakti stand-in sends one JSON line), or None if refused."""
    line = unix_request(unix_path(endpoint))
    if line is None:
        return None
    try:
        return json.loads(line.decode())
    except ValueError:
        return {}


def runtime_cgroup_driver():
    """--cgroup-driver of the running frakti, if one runs (frakti's default is cgroupfs)."""
    procs = find_processes("frakti")
    if not procs:
        return None
    return flag_value(procs[0][1], "cgroup-driver", "cgroupfs")


# ==========================================================================
# kubeadm

KUBEADM_GLOBAL = {"v": "int", "rootfs": "str", "help": "bool"}
INIT_FLAGS = dict(
    KUBEADM_GLOBAL,
    **{
        "apiserver-advertise-address": "str",
        "apiserver-bind-port": "int",
        "apiserver-cert-extra-sans": "list",
        "cert-dir": "str",
        "config": "str",
        "cri-socket": "str",
        "dry-run": "bool",
        "feature-gates": "str",
        "ignore-preflight-errors": "list",
        "kubernetes-version": "str",
        "node-name": "str",
        "pod-network-cidr": "str",
        "service-cidr": "str",
        "service-dns-domain": "str",
        "skip-token-print": "bool",
        "token": "str",
        "token-ttl": "str",
        "image-repository": "str",
    },
)
RESET_FLAGS = dict(
    KUBEADM_GLOBAL,
    **{
        "cert-dir": "str",
        "cri-socket": "str",
        "force": "bool",
        "ignore-preflight-errors": "list",
    },
)
TOKEN_FLAGS = dict(
    KUBEADM_GLOBAL,
    **{
        "print-join-command": "bool",
        "ttl": "str",
        "description": "str",
        "groups": "list",
        "usages": "list",
        "kubeconfig": "str",
        "config": "str",
        "dry-run": "bool",
    },
)


class KubeadmExit(Exception):
    def __init__(self, code, message=""):
        super().__init__(message)
        self.code = code
        self.message = message


# kubeadm 1.12 reads kubeadm.k8s.io/v1alpha3 (and v1alpha2, which the stand-in does
# not implement), and lets only these flags stand beside --config
# (ValidateMixedArguments in the v1alpha3-era validation.go; --skip-* too).
CONFIG_SCHEMAS = ("kubeadm.k8s.io/v1alpha3",)
WITH_CONFIG = ("config", "ignore-preflight-errors", "dry-run", "kubeconfig", "v", "rootfs")


def config_opts(opts):
    """opts with what the --config file says in place of --config (or KubeadmExit)."""
    flags, error = kubeadm_config_flags(opts["config"], CONFIG_SCHEMAS, opts, WITH_CONFIG)
    if error:
        raise KubeadmExit(1, error)
    rest = {k: v for k, v in opts.items() if k != "config"}
    return dict(rest, **flags)


def kubeadm_main(args):
    try:
        if not args or args[0] in ("-h", "--help", "help"):
            print(
                "kubeadm: easily bootstrap a secure Kubernetes cluster (TEST STAND-IN)\n\n"
                "Usage:\n  kubeadm [command]\n\nAvailable Commands:\n"
                "  init, reset, token, version"
            )
            return 0
        command, rest = args[0], args[1:]
        if command == "version":
            return kubeadm_version(rest)
        if command == "init":
            return kubeadm_init(rest)
        if command == "reset":
            return kubeadm_reset(rest)
        if command == "token":
            return kubeadm_token(rest)
        raise KubeadmExit(
            1,
            f'Error: unknown command "{command}" for "kubeadm"\nRun \'kubeadm --help\' for usage.',
        )
    except FlagError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KubeadmExit as exc:
        if exc.message:
            print(exc.message, file=sys.stderr)
        return exc.code


def kubeadm_version(args):
    flags, _ = parse_flags(args, dict(KUBEADM_GLOBAL, output="str"), shorthands={"o": "output"})
    output = flags.get("output", "")
    if output == "short":
        print(VERSION)
    elif output == "json":
        major, minor = VERSION.lstrip("v").split(".")[:2]
        print(
            json.dumps(
                {
                    "clientVersion": {
                        "major": major,
                        "minor": minor,
                        "gitVersion": VERSION,
                        "platform": "linux/amd64",
                    }
                },
                indent=2,
            )
        )
    elif output == "":
        print(f"kubeadm version: &{version_info()}")
    else:
        raise KubeadmExit(1, f"error: invalid output format: {output}")
    return 0


def preflight_checks(opts, control_plane_version):
    """(name, "ERROR"|"WARNING", message) for every failed kubeadm 1.12 init preflight check."""
    failed = []

    def fail(name, message, level="ERROR"):
        failed.append((name, level, message))

    if os.geteuid() != 0:
        fail("IsPrivilegedUser", "user is not running as root")
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        fail("NumCPU", f"the number of available CPUs {cpus} is less than the required 2")
    cp, mine = minor_of(control_plane_version), minor_of(VERSION)
    if cp and mine and cp > mine:
        fail(
            "KubernetesVersion",
            "kubernetes version is greater than kubeadm version. Please consider "
            "to upgrade kubeadm. kubernetes version: {}. Kubeadm version: {}.x".format(
                control_plane_version.lstrip("v"), "{}.{}".format(*mine)
            ),
            "WARNING",
        )
    if (
        shutil.which("systemctl")
        and subprocess.run(["systemctl", "is-enabled", "--quiet", "kubelet.service"]).returncode
        != 0
    ):
        fail(
            "Service-Kubelet",
            "kubelet service is not enabled, please run 'systemctl enable kubelet.service'",
            "WARNING",
        )
    port = opts.get("apiserver-bind-port", 6443)
    for p in (port, 10251, 10252):
        if not port_free(p):
            fail(f"Port-{p}", f"Port {p} is in use")
    for manifest in (
        "kube-apiserver.yaml",
        "kube-controller-manager.yaml",
        "kube-scheduler.yaml",
        "etcd.yaml",
    ):
        path = os.path.join(MANIFESTS, manifest)
        if os.path.exists(path):
            fail("FileAvailable-" + path.replace("/", "-"), f"{path} already exists")
    if os.path.isdir(MANIFESTS) and os.listdir(MANIFESTS):
        fail("DirAvailable--etc-kubernetes-manifests", f"{MANIFESTS} is not empty")
    crisocket = opts.get("cri-socket", DOCKERSHIM_SOCKET)
    if crisocket != DOCKERSHIM_SOCKET:
        crictl = shutil.which("crictl")
        if crictl is None:
            fail("FileExisting-crictl", "crictl not found in system path")
        elif (
            subprocess.run(
                [crictl, "-r", crisocket, "info"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ).returncode
            != 0
        ):
            fail(
                "CRI",
                f"unable to check if the container runtime at {crisocket!r} is running: exit status 1",
            )
    bridge = "/proc/sys/net/bridge/bridge-nf-call-iptables"
    for path in (bridge, "/proc/sys/net/ipv4/ip_forward"):
        name = "FileContent-" + path.replace("/", "-")
        if not os.path.exists(path):
            fail(name, f"{path} does not exist")
        elif read_text(path).strip() != "1":
            fail(name, f"{path} contents are not set to 1")
    if swap_devices():
        fail("Swap", "running with swap on is not supported. Please disable swap")
    for exe, mandatory in (
        ("ip", True),
        ("iptables", True),
        ("mount", True),
        ("nsenter", True),
        ("ebtables", False),
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
    missing = [
        name
        for name in ("cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids")
        if not cgroup_enabled(name)
    ]
    if missing:
        fail("SystemVerification", "missing cgroups: {}".format(" ".join(missing)))
    node = opts.get("node-name") or hostname()
    try:
        socket.getaddrinfo(node, None)
    except OSError:
        fail("Hostname", f'hostname "{node}" could not be reached', "WARNING")
    kubelet = shutil.which("kubelet")
    if kubelet is None:
        fail("KubeletVersion", "couldn't get kubelet version: executable file not found in $PATH")
    else:
        out = subprocess.run(
            [kubelet, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        text = out.stdout.decode(errors="replace").strip()
        kv = minor_of(text.replace("Kubernetes ", ""))
        if out.returncode != 0 or kv is None:
            fail("KubeletVersion", f"couldn't get kubelet version: {text}")
        elif cp and kv > cp:
            fail(
                "KubeletVersion",
                "the kubelet version is higher than the control plane version. This is "
                "not a supported version skew and may lead to a malfunctional cluster. Kubelet version: "
                '"{}" Control plane version: "{}"'.format(
                    text.replace("Kubernetes ", ""), control_plane_version
                ),
            )
        elif cp and kv < (cp[0], cp[1] - 1):
            fail(
                "KubeletVersion",
                'Kubelet version "{}" is lower than kubeadm can support. Please upgrade '
                "kubelet".format(text.replace("Kubernetes ", "")),
            )
    if os.path.isdir(ETCD_DIR) and os.listdir(ETCD_DIR):
        fail("DirAvailable--var-lib-etcd", f"{ETCD_DIR} is not empty")
    if not port_free(2379):
        fail("Port-2379", "Port 2379 is in use")
    if not port_free(10250):
        fail("Port-10250", "Port 10250 is in use")
    return failed


def cgroup_enabled(name):
    try:
        with open("/proc/cgroups") as fh:
            for line in fh:
                parts = line.split()
                if parts and parts[0] == name:
                    return parts[-1] == "1"
    except OSError:
        pass
    return False


def pem(kind, seed):
    body = base64.encodebytes(hashlib.sha512(seed.encode()).digest() * 4).decode()
    return f"-----BEGIN {kind}-----\n{body}-----END {kind}-----\n"


def kubeconfig(server, user, ca):
    return (
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {}\n"
        "  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: {}\n"
        "  name: {}@kubernetes\ncurrent-context: {}@kubernetes\nkind: Config\npreferences: {{}}\n"
        "users:\n- name: {}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n".format(
            base64.b64encode(ca.encode()).decode(),
            server,
            user,
            user,
            user,
            user,
            base64.b64encode(pem("CERTIFICATE", user).encode()).decode(),
            base64.b64encode(pem("RSA PRIVATE KEY", user).encode()).decode(),
        )
    )


def static_pod(name, command, port=None):
    lines = [
        "apiVersion: v1",
        "kind: Pod",
        "metadata:",
        "  annotations:",
        '    scheduler.alpha.kubernetes.io/critical-pod: ""',
        "  creationTimestamp: null",
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
    lines += [
        "    image: k8s.gcr.io/{}-amd64:{}".format(name, VERSION if name != "etcd" else "3.2.24"),
        "    imagePullPolicy: IfNotPresent",
        f"    name: {name}",
        "  hostNetwork: true",
        "  priorityClassName: system-cluster-critical",
        "status: {}",
    ]
    return "\n".join(lines) + "\n"


def nth_ip(cidr, n):
    return str(ipaddress.ip_network(cidr, strict=False).network_address + n)


def kubeadm_init(args):
    opts, positionals = parse_flags(args, INIT_FLAGS)
    if positionals:
        raise KubeadmExit(1, f'Error: unknown command "{positionals[0]}" for "kubeadm init"')
    if "config" in opts:
        opts = config_opts(opts)
    pod_cidr = opts.get("pod-network-cidr", "")
    service_cidr = opts.get("service-cidr", "10.96.0.0/12")
    for flag, value in (("pod-network-cidr", pod_cidr), ("service-cidr", service_cidr)):
        if value:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                field = "podSubnet" if flag.startswith("pod") else "serviceSubnet"
                raise KubeadmExit(
                    3, f'networking.{field}: Invalid value: "{value}": couldn\'t parse subnet'
                ) from None
    requested = opts.get("kubernetes-version", "stable-1")
    if requested.startswith(("stable", "latest")):
        print(
            "I0101 00:00:00.000000 version.go:93] could not fetch a Kubernetes version from the internet: "
            f'unable to get URL "https://dl.k8s.io/release/{requested}.txt": Get https://dl.k8s.io/release/{requested}.txt: '
            "dial tcp: lookup dl.k8s.io: Temporary failure in name resolution",
            file=sys.stderr,
        )
        print(
            f"I0101 00:00:00.000000 version.go:94] falling back to the local client version: {VERSION}",
            file=sys.stderr,
        )
        k8s_version = VERSION
    else:
        k8s_version = requested if requested.startswith("v") else "v" + requested
    cp = minor_of(k8s_version)
    if cp is None:
        raise KubeadmExit(3, f'kubernetesVersion: Invalid value: "{requested}": invalid version')
    if cp < (1, 11):
        raise KubeadmExit(
            3,
            "this version of kubeadm only supports deploying clusters with the control "
            f"plane version >= 1.11.0. Current version: {k8s_version}",
        )
    crisocket = opts.get("cri-socket", DOCKERSHIM_SOCKET)
    node = (opts.get("node-name") or hostname()).lower()
    with open(INIT_LOG, "a") as fh:
        fh.write(
            json.dumps(
                {
                    "time": now_iso(),
                    "argv": args,
                    "pod_network_cidr": pod_cidr,
                    "service_cidr": service_cidr,
                    "kubernetes_version": k8s_version,
                    "cri_socket": crisocket,
                    "node_name": node,
                }
            )
            + "\n"
        )
    token = opts.get("token")
    if token is not None and not re.match(r"^[a-z0-9]{6}\.[a-z0-9]{16}$", token):
        raise KubeadmExit(
            3,
            f'the bootstrap token "{token}" was not of the form '
            '"^([a-z0-9]{6})\\.([a-z0-9]{16})$"',
        )
    advertise = opts.get("apiserver-advertise-address")
    if not advertise:
        route = default_route()
        if route is None:
            raise KubeadmExit(1, "unable to select an IP from default routes.")
        advertise = route[1]
    port = opts.get("apiserver-bind-port", 6443)

    print(f"[init] using Kubernetes version: {k8s_version}")
    print("[preflight] running pre-flight checks")
    ignored = {i.lower() for i in opts.get("ignore-preflight-errors", [])}
    errors = []
    for name, level, message in preflight_checks(opts, k8s_version):
        if level == "ERROR" and "all" not in ignored and name.lower() not in ignored:
            errors.append((name, message))
        else:
            print(f"\t[WARNING {name}]: {message}", file=sys.stderr)
    if errors:
        lines = ["[preflight] Some fatal errors occurred:"]
        lines += ["\t[ERROR {}]: {}".format(*e) for e in errors]
        lines.append(
            "[preflight] If you know what you are doing, you can make a check non-fatal with "
            "`--ignore-preflight-errors=...`"
        )
        raise KubeadmExit(2, "\n".join(lines))
    print("[preflight/images] Pulling images required for setting up a Kubernetes cluster")
    print("[preflight/images] (stand-in: images are not pulled)")

    # kubelet configuration, then (re)start the kubelet
    kubeadm_args = (
        ["--container-runtime=remote", f"--container-runtime-endpoint={crisocket}"]
        if crisocket != DOCKERSHIM_SOCKET
        else ["--cgroup-driver=cgroupfs", "--network-plugin=cni"]
    )
    if node != hostname():
        kubeadm_args.append(f"--hostname-override={node}")
    print(f'[kubelet] Writing kubelet environment file with flags to file "{KUBEADM_FLAGS_ENV}"')
    atomic_write(KUBEADM_FLAGS_ENV, "KUBELET_KUBEADM_ARGS={}\n".format(" ".join(kubeadm_args)))
    print(f'[kubelet] Writing kubelet configuration to file "{KUBELET_CONFIG}"')
    atomic_write(KUBELET_CONFIG, kubelet_config_yaml(service_cidr))
    print("[preflight] Activating the kubelet service")
    if subprocess.run(["systemctl", "restart", "kubelet"]).returncode != 0:
        print(
            "[kubelet] WARNING: unable to start the kubelet service: [exit status 5]",
            file=sys.stderr,
        )
        print("[kubelet] please ensure kubelet is reloaded and running manually.", file=sys.stderr)

    # certificates and kubeconfig files
    print("[certificates] Generated ca certificate and key.")
    os.makedirs(PKI + "/etcd", exist_ok=True)
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
    print(f'[certificates] valid certificates and keys now exist in "{PKI}"')
    server = f"https://{advertise}:{port}"
    for name, user in (
        ("admin.conf", "kubernetes-admin"),
        ("kubelet.conf", "system:node:" + node),
        ("controller-manager.conf", "system:kube-controller-manager"),
        ("scheduler.conf", "system:kube-scheduler"),
    ):
        atomic_write(os.path.join(K8S_DIR, name), kubeconfig(server, user, ca), 0o600)
        print(f'[kubeconfig] Wrote KubeConfig file to disk: "{K8S_DIR}/{name}"')

    # static pod manifests
    os.makedirs(MANIFESTS, exist_ok=True)
    apiserver = [
        "kube-apiserver",
        "--authorization-mode=Node,RBAC",
        f"--advertise-address={advertise}",
        "--allow-privileged=true",
        f"--client-ca-file={PKI}/ca.crt",
        "--enable-admission-plugins=NodeRestriction",
        "--enable-bootstrap-token-auth=true",
        "--etcd-servers=https://127.0.0.1:2379",
        "--insecure-port=0",
        f"--secure-port={port}",
        f"--service-cluster-ip-range={service_cidr}",
        f"--tls-cert-file={PKI}/apiserver.crt",
        f"--tls-private-key-file={PKI}/apiserver.key",
    ]
    cm = [
        "kube-controller-manager",
        "--address=127.0.0.1",
        f"--kubeconfig={K8S_DIR}/controller-manager.conf",
        "--leader-elect=true",
        f"--root-ca-file={PKI}/ca.crt",
        "--use-service-account-credentials=true",
    ]
    if pod_cidr:
        cm += [
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={pod_cidr}",
            "--node-cidr-mask-size=24",
        ]
    scheduler = [
        "kube-scheduler",
        "--address=127.0.0.1",
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
    for name, command in (
        ("kube-apiserver", apiserver),
        ("kube-controller-manager", cm),
        ("kube-scheduler", scheduler),
        ("etcd", etcd),
    ):
        atomic_write(os.path.join(MANIFESTS, name + ".yaml"), static_pod(name, command))
        print(
            f'[controlplane] wrote Static Pod manifest for component {name} to "{MANIFESTS}/{name}.yaml"'
        )

    # wait for the control plane, i.e. for the kubelet to run the static pods
    timeout = float(os.environ.get("STANDIN_KUBEADM_TIMEOUT", "60"))
    print(
        f'[init] waiting for the kubelet to boot up the control plane as Static Pods from directory "{MANIFESTS}"'
    )
    print("[init] this might take a minute or longer if the control plane images have to be pulled")
    started = time.time()
    warned = False
    while not apiserver_up(advertise, port):
        if not warned and time.time() - started > timeout / 3:
            warned = True
            print("[kubelet-check] It seems like the kubelet isn't running or healthy.")
            print(
                "[kubelet-check] The HTTP call equal to 'curl -sSL http://localhost:10248/healthz' failed "
                "with error: Get http://localhost:10248/healthz: dial tcp 127.0.0.1:10248: connect: "
                "connection refused."
            )
        if time.time() - started > timeout:
            raise KubeadmExit(1, CONTROL_PLANE_TIMEOUT)
        time.sleep(0.5)
    print(
        "[apiclient] All control plane components are healthy after %f seconds"
        % (time.time() - started)
    )
    with State() as state:
        state["configmaps"]["kubeadm-config"] = {
            "kubernetesVersion": k8s_version,
            "podSubnet": pod_cidr,
            "serviceSubnet": service_cidr,
            "controlPlaneEndpoint": f"{advertise}:{port}",
            "criSocket": crisocket,
        }
    print(
        '[uploadconfig] storing the configuration used in ConfigMap "kubeadm-config" in the '
        '"kube-system" Namespace'
    )
    print(
        f"[markmaster] Marking the node {node} as master by adding the label "
        "\"node-role.kubernetes.io/master=''\""
    )
    print(
        f"[markmaster] Marking the node {node} as master by adding the taints "
        "[node-role.kubernetes.io/master:NoSchedule]"
    )
    while True:  # the kubelet registers the node; kubeadm then marks it
        with State() as state:
            obj = state["nodes"].get(node)
            if obj is not None:
                obj["metadata"]["labels"]["node-role.kubernetes.io/master"] = ""
                taints = obj["spec"].setdefault("taints", [])
                if MASTER_TAINT not in taints:
                    taints.append(dict(MASTER_TAINT))
                break
        if time.time() - started > timeout:
            raise KubeadmExit(
                1,
                "error marking master: timed out waiting for the condition "
                f'(node "{node}" never registered)',
            )
        time.sleep(0.5)
    token = (
        opts.get("token")
        or f"{hashlib.sha1(node.encode()).hexdigest()[:6]}.{hashlib.sha1(os.urandom(8)).hexdigest()[:16]}"
    )
    with State() as state:
        state["configmaps"].setdefault("bootstrap-tokens", []).append(token)
    print(f"[bootstraptoken] using token: {token}")
    print("[addons] Applied essential addon: CoreDNS")
    print("[addons] Applied essential addon: kube-proxy")
    print("\nYour Kubernetes master has initialized successfully!\n")
    print(
        "To start using your cluster, you need to run the following as a regular user:\n\n"
        "  mkdir -p $HOME/.kube\n  sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n"
        "  sudo chown $(id -u):$(id -g) $HOME/.kube/config\n\n"
        "You should now deploy a pod network to the cluster.\n"
        'Run "kubectl apply -f [podnetwork].yaml" with one of the options listed at:\n'
        "  https://kubernetes.io/docs/concepts/cluster-administration/addons/\n\n"
        "You can now join any number of machines by running the following on each node\nas root:\n"
    )
    print(f"  {join_command(advertise, port, token, ca)}\n")
    return 0


CONTROL_PLANE_TIMEOUT = """
Unfortunately, an error has occurred:
	timed out waiting for the condition

This error is likely caused by:
	- The kubelet is not running
	- The kubelet is unhealthy due to a misconfiguration of the node in some way (required cgroups disabled)

If you are on a systemd-powered system, you can try to troubleshoot the error with the following commands:
	- 'systemctl status kubelet'
	- 'journalctl -xeu kubelet'
couldn't initialize a Kubernetes cluster"""


def join_command(host, port, token, ca):
    digest = hashlib.sha256(ca.encode()).hexdigest()
    return (
        f"kubeadm join {host}:{port} --token {token} --discovery-token-ca-cert-hash sha256:{digest}"
    )


def kubelet_config_yaml(service_cidr):
    return f"""address: 0.0.0.0
apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 2m0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupsPerQOS: true
clusterDNS:
- {nth_ip(service_cidr, 10)}
clusterDomain: cluster.local
failSwapOn: true
healthzBindAddress: 127.0.0.1
healthzPort: 10248
kind: KubeletConfiguration
port: 10250
rotateCertificates: true
staticPodPath: /etc/kubernetes/manifests
"""


def kubeadm_reset(args):
    opts, _ = parse_flags(args, RESET_FLAGS, shorthands={"f": "force"})
    print(
        "[reset] WARNING: changes made to this host by 'kubeadm init' or 'kubeadm join' will be reverted."
    )
    if not opts.get("force"):
        sys.stdout.write("[reset] are you sure you want to proceed? [y/N]: ")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise KubeadmExit(1, "Aborted reset operation")
    print("[preflight] running pre-flight checks")
    print("[reset] stopping the kubelet service")
    subprocess.run(["systemctl", "stop", "kubelet"])
    print(f'[reset] unmounting mounted directories in "{KUBELET_DIR}"')
    print("[reset] removing kubernetes-managed containers")
    dirs = [KUBELET_DIR, "/etc/cni/net.d", "/var/lib/dockershim", "/var/run/kubernetes", ETCD_DIR]
    print("[reset] deleting contents of stateful directories: [{}]".format(" ".join(dirs)))
    for d in dirs:
        clear_dir(d)
    config_dirs = [MANIFESTS, PKI]
    print("[reset] deleting contents of config directories: [{}]".format(" ".join(config_dirs)))
    for d in config_dirs:
        clear_dir(d)
    files = [
        os.path.join(K8S_DIR, f)
        for f in (
            "admin.conf",
            "kubelet.conf",
            "bootstrap-kubelet.conf",
            "controller-manager.conf",
            "scheduler.conf",
        )
    ]
    print("[reset] deleting files: [{}]".format(" ".join(files)))
    for f in files:
        if os.path.lexists(f):
            os.unlink(f)
    with State() as state:
        state.clear()
    if os.path.exists(STATE_PATH):
        os.unlink(STATE_PATH)
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


def kubeadm_token(args):
    opts, positionals = parse_flags(args, TOKEN_FLAGS)
    if not positionals or positionals[0] not in ("create", "list"):
        raise KubeadmExit(
            1, "kubeadm stand-in: only `token create` and `token list` are implemented"
        )
    admin = opts.get("kubeconfig", K8S_DIR + "/admin.conf")
    if not os.path.exists(admin):
        raise KubeadmExit(
            1, f"failed to load admin kubeconfig [open {admin}: no such file or directory]"
        )
    host, port = server_hostport(kubeconfig_server(admin) or "")
    if not apiserver_up(host, port):
        raise KubeadmExit(
            1,
            "timed out waiting for the condition"
            if positionals[0] == "create"
            else f"failed to list bootstrap tokens [Get https://{host}:{port}/api/v1/namespaces/"
            f"kube-system/secrets: dial tcp {host}:{port}: connect: connection refused]",
        )
    if positionals[0] == "list":
        print(
            "TOKEN                     TTL       EXPIRES   USAGES                   DESCRIPTION   EXTRA GROUPS"
        )
        for token in read_state()["configmaps"].get("bootstrap-tokens", []):
            print(
                f"{token}   23h       -         authentication,signing   <none>        "
                "system:bootstrappers:kubeadm:default-node-token"
            )
        return 0
    token = (
        positionals[1]
        if len(positionals) > 1
        else f"{hashlib.sha1(os.urandom(8)).hexdigest()[:6]}.{hashlib.sha1(os.urandom(8)).hexdigest()[:16]}"
    )
    with State() as state:
        state["configmaps"].setdefault("bootstrap-tokens", []).append(token)
    if opts.get("print-join-command"):
        with open(PKI + "/ca.crt") as fh:
            print(join_command(host, port, token, fh.read()))
    else:
        print(token)
    return 0


# ==========================================================================
# kubelet

KUBELET_BOOL = [
    "allow-privileged",
    "anonymous-auth",
    "authentication-token-webhook",
    "cgroups-per-qos",
    "containerized",
    "enable-controller-attach-detach",
    "enable-debugging-handlers",
    "enable-server",
    "exit-on-lock-contention",
    "fail-swap-on",
    "keep-terminated-pod-volumes",
    "make-iptables-util-chains",
    "register-node",
    "register-schedulable",
    "rotate-certificates",
    "serialize-image-pulls",
    "logtostderr",
    "alsologtostderr",
    "skip-headers",
    "version",
    "experimental-check-node-capabilities-before-mount",
    "experimental-kernel-memcg-notification",
    "redirect-container-streaming",
    "protect-kernel-defaults",
]
KUBELET_STR = [
    "address",
    "authorization-mode",
    "bootstrap-kubeconfig",
    "cert-dir",
    "cgroup-driver",
    "cgroup-root",
    "client-ca-file",
    "cloud-config",
    "cloud-provider",
    "cluster-dns",
    "cluster-domain",
    "cni-bin-dir",
    "cni-conf-dir",
    "config",
    "container-runtime",
    "container-runtime-endpoint",
    "docker-endpoint",
    "dynamic-config-dir",
    "enforce-node-allocatable",
    "eviction-hard",
    "eviction-soft",
    "feature-gates",
    "hairpin-mode",
    "healthz-bind-address",
    "healthz-port",
    "hostname-override",
    "image-gc-high-threshold",
    "image-gc-low-threshold",
    "image-pull-progress-deadline",
    "image-service-endpoint",
    "kube-reserved",
    "kubeconfig",
    "kubelet-cgroups",
    "lock-file",
    "log-dir",
    "log-file",
    "max-pods",
    "network-plugin",
    "network-plugin-mtu",
    "node-ip",
    "node-labels",
    "node-status-update-frequency",
    "pod-cidr",
    "pod-infra-container-image",
    "pod-manifest-path",
    "port",
    "read-only-port",
    "register-with-taints",
    "resolv-conf",
    "root-dir",
    "runtime-cgroups",
    "runtime-request-timeout",
    "streaming-connection-idle-timeout",
    "system-reserved",
    "tls-cert-file",
    "tls-private-key-file",
    "v",
    "vmodule",
    "stderrthreshold",
    "volume-plugin-dir",
    "cpu-manager-policy",
    "max-open-files",
    "pods-per-core",
    "system-cgroups",
    "kube-reserved-cgroup",
    "system-reserved-cgroup",
]
KUBELET_FLAGS = dict([(f, "bool") for f in KUBELET_BOOL] + [(f, "str") for f in KUBELET_STR])


class Kubelet:
    def __init__(self, flags):
        self.flags = flags
        self.listeners = {}
        self.node = (flags.get("hostname-override") or hostname()).lower()
        self.runtime = flags.get("container-runtime", "docker")
        self.endpoint = flags.get("container-runtime-endpoint", "unix://" + DOCKERSHIM_SOCKET)

    def start_checks(self):
        """What makes the real kubelet 1.12 exit at start-up (klog.Fatal: exit 255)."""
        flags = self.flags
        config = {}
        if "config" in flags:
            path = flags["config"]
            if not os.path.exists(path):
                fatal(
                    f"failed to load Kubelet config file {path}, error failed to read kubelet config file "
                    f'"{path}", error: open {path}: no such file or directory'
                )
            config = read_simple_yaml(path)
        self.config = config
        self.static_pod_path = flags.get("pod-manifest-path") or config.get("staticPodPath", "")
        for gate in [g for g in flags.get("feature-gates", "").split(",") if g]:
            key, _, value = gate.partition("=")
            if value.lower() not in ("true", "false"):
                fatal(
                    f"failed to set feature gates from initial flags-based config: invalid value of {key}: {value}, "
                    f"err: strconv.ParseBool: parsing {value!r}: invalid syntax"
                )
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            fatal(
                "failed to run Kubelet: failed to get the kubelet's cgroup: cpu and memory cgroup hierarchy "
                "not unified (cgroup v2 is not supported by this kubelet)"
            )
        fail_swap_on = flags.get("fail-swap-on", config.get("failSwapOn", "true") != "false")
        if fail_swap_on and swap_devices():
            fatal(
                "failed to run Kubelet: Running with swap on is not supported, please disable swap! or set "
                "--fail-swap-on flag to false. /proc/swaps contained: {}".format(
                    read_text("/proc/swaps").split("\n")
                )
            )
        kubeconfig_path = flags.get("kubeconfig", "")
        bootstrap = flags.get("bootstrap-kubeconfig", "")
        if (
            kubeconfig_path
            and not os.path.exists(kubeconfig_path)
            and bootstrap
            and not os.path.exists(bootstrap)
        ):
            fatal(
                f"failed to run Kubelet: unable to load bootstrap kubeconfig: stat {bootstrap}: no such file or "
                "directory"
            )
        self.kubeconfig = kubeconfig_path
        if self.runtime not in ("docker", "remote", "rkt"):
            fatal(f'failed to run Kubelet: unsupported container runtime "{self.runtime}"')
        if self.runtime == "docker":
            docker = unix_path(flags.get("docker-endpoint", "unix:///var/run/docker.sock"))
            if unix_request(docker, b"GET /_ping HTTP/1.0\r\n\r\n") is None:
                fatal(
                    "failed to run Kubelet: failed to create kubelet: failed to get docker version: Cannot "
                    f"connect to the Docker daemon at unix://{docker}. Is the docker daemon running?"
                )
        else:
            if runtime_status(self.endpoint) is None:
                glog(
                    "W",
                    f'connection error: desc = "transport: Error while dialing dial unix {unix_path(self.endpoint)}: connect: '
                    'no such file or directory"',
                )
                fatal(
                    "failed to run Kubelet: failed to create kubelet: rpc error: code = Unavailable desc = "
                    "all SubConns are in TransientFailure"
                )
            mine = flags.get("cgroup-driver") or config.get("cgroupDriver") or "cgroupfs"
            theirs = runtime_cgroup_driver()
            if theirs is not None and theirs != mine:
                fatal(
                    f'failed to run Kubelet: misconfiguration: kubelet cgroup driver: "{mine}" is different '
                    f'from runtime cgroup driver: "{theirs}"'
                )
        port = int(flags.get("port", config.get("port", 10250)))
        try:
            self.listeners["kubelet"] = listen_tcp(flags.get("address", "0.0.0.0"), port)
        except OSError as exc:
            fatal(f"failed to run Kubelet: listen tcp 0.0.0.0:{port}: bind: {exc.strerror.lower()}")
        healthz = int(flags.get("healthz-port", config.get("healthzPort", 10248)))
        try:
            self.listeners["healthz"] = listen_tcp("127.0.0.1", healthz)
        except OSError as exc:
            fatal(
                f"failed to run Kubelet: listen tcp 127.0.0.1:{healthz}: bind: "
                f"{exc.strerror.lower()}"
            )

    def serve_forever(self):
        threading.Thread(
            target=self._accept, args=(self.listeners["kubelet"], b""), daemon=True
        ).start()
        threading.Thread(
            target=self._accept,
            args=(
                self.listeners["healthz"],
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                True,
            ),
            daemon=True,
        ).start()
        glog("I", f"Version: {VERSION}")
        glog(
            "I",
            f"Started kubelet; node {self.node}, runtime {self.runtime} {self.endpoint}",
        )
        while True:
            self.sync_static_pods()
            self.sync_node()
            kubelet_sync_pods(self)
            time.sleep(2)

    @staticmethod
    def _accept(sock, reply, read_request=False):
        while True:
            conn, _ = sock.accept()
            try:
                if read_request:
                    conn.settimeout(1)
                    with contextlib.suppress(OSError):
                        conn.recv(4096)
                if reply:
                    conn.sendall(reply)
            except OSError:
                pass
            finally:
                conn.close()

    def sync_static_pods(self):
        wanted = {}
        if self.static_pod_path and os.path.isdir(self.static_pod_path):
            for name in os.listdir(self.static_pod_path):
                if name in STATIC_PODS:
                    host, port = STATIC_PODS[name]
                    text = read_text(os.path.join(self.static_pod_path, name))
                    m = re.search(r"--secure-port=(\d+)", text)
                    if m:
                        port = int(m.group(1))
                    wanted[name] = (host, port)
        for name in list(self.listeners):
            if name in STATIC_PODS and name not in wanted:
                self.listeners.pop(name).close()
                glog("I", f"static pod {name} removed")
        for name, (host, port) in wanted.items():
            if name in self.listeners:
                continue
            try:
                sock = listen_tcp(host, port)
            except OSError as exc:
                glog(
                    "E",
                    f"static pod {name}: listen tcp {host}:{port}: bind: "
                    f"{exc.strerror.lower()} (container restarting)",
                )
                continue
            self.listeners[name] = sock
            banner = APISERVER_BANNER + b"\n" if name == "kube-apiserver.yaml" else b""
            threading.Thread(target=self._accept, args=(sock, banner), daemon=True).start()
            if name == "etcd.yaml":
                os.makedirs(ETCD_DIR + "/member/snap", exist_ok=True)
            glog("I", f"static pod {name} running, listening on {host}:{port}")

    def sync_node(self):
        if not self.kubeconfig or not os.path.exists(self.kubeconfig):
            return
        server = kubeconfig_server(self.kubeconfig)
        if not server or not apiserver_up(*server_hostport(server)):
            glog(
                "E",
                f'Unable to register node "{self.node}" with API server: connection refused',
            )
            return
        status = runtime_status(self.endpoint) if self.runtime == "remote" else {}
        if status is None:
            ready = ("False", "KubeletNotReady", "container runtime is down")
        else:
            conditions = {c.get("type"): c for c in status.get("status", {}).get("conditions", [])}
            net = conditions.get("NetworkReady", {"status": True})
            if not net.get("status"):
                ready = (
                    "False",
                    "KubeletNotReady",
                    "runtime network not ready: NetworkReady=false reason:{} message:{}".format(
                        net.get("reason", ""), net.get("message", "")
                    ),
                )
            else:
                ready = ("True", "KubeletReady", "kubelet is posting ready status")
        now = now_iso()
        with State() as state:
            node = state["nodes"].get(self.node)
            if node is None:
                node = state["nodes"][self.node] = self.new_node(now)
                glog("I", f"Successfully registered node {self.node}")
            old = node["status"]["conditions"][0]
            if old["status"] != ready[0]:
                old["lastTransitionTime"] = now
            old.update(status=ready[0], reason=ready[1], message=ready[2], lastHeartbeatTime=now)
            node["status"]["nodeInfo"]["containerRuntimeVersion"] = runtime_version(status, self)
            node["status"]["nodeInfo"].update(node_boot_info())
            state["heartbeats"][self.node] = time.time()

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
            mask = re.search(r"--node-cidr-mask-size=(\d+)", text)
            if "--allocate-node-cidrs=true" in text and cidr:
                net = ipaddress.ip_network(cidr.group(1), strict=False)
                spec["podCIDR"] = str(
                    next(net.subnets(new_prefix=int(mask.group(1) if mask else 24)))
                )
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "creationTimestamp": now,
                "labels": {
                    "beta.kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux",
                    "kubernetes.io/hostname": self.node,
                },
            },
            "spec": spec,
            "status": {
                "addresses": addresses,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "KubeletNotReady",
                        "message": "",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": VERSION,
                    "kubeProxyVersion": VERSION,
                    "containerRuntimeVersion": "",
                    **node_boot_info(),
                },
            },
        }


def runtime_version(status, kubelet):
    if kubelet.runtime != "remote":
        return "docker://unknown"
    version = (status or {}).get("version", {})
    return "{}://{}".format(
        version.get("runtimeName", "unknown"), version.get("runtimeVersion", "unknown")
    )


def kubelet_main(args):
    try:
        flags, positionals = parse_flags(args, KUBELET_FLAGS)
    except FlagError as exc:
        print(f"F0101 00:00:00.000000 {os.getpid():7d} server.go:153] {exc}", file=sys.stderr)
        return 255
    if flags.get("version"):
        print(f"Kubernetes {VERSION}")
        return 0
    if positionals:
        fatal(f"unknown command: {positionals[0]}")
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
    "context": "str",
    "cluster": "str",
    "user": "str",
    "insecure-skip-tls-verify": "bool",
    "all": "bool",
    "overwrite": "bool",
    "selector": "str",
    "client": "bool",
    "short": "bool",
    "no-headers": "bool",
    "show-labels": "bool",
    "all-namespaces": "bool",
}
KUBECTL_SHORT = {"n": "namespace", "o": "output", "s": "server", "l": "selector", "v": "v"}


class KubectlExit(Exception):
    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code
        self.message = message


NODE_WORDS = ("nodes", "node", "no")


def kubectl_main(args):
    try:
        flags, words = parse_flags(args, KUBECTL_FLAGS, normalize=False, shorthands=KUBECTL_SHORT)
        if len(words) >= 2 and "/" in words[1]:  # kubectl get node/NAME
            words[1:2] = words[1].split("/", 1)
        if not words:
            raise KubectlExit(
                "kubectl controls the Kubernetes cluster manager (TEST STAND-IN).\n"
                "Implemented: get nodes [NAME] [-o json|name|wide], taint/annotate/label nodes, "
                "version"
            )
        if words[0] == "version":
            return kubectl_version(flags)
        if len(words) >= 2 and words[1] in NODE_WORDS:
            command = {
                "get": kubectl_get_nodes,
                "taint": kubectl_taint,
                "annotate": kubectl_set_metadata,
                "label": kubectl_set_metadata,
            }.get(words[0])
            if command is not None:
                connect(flags)
                if command is kubectl_set_metadata:
                    return command(flags, words[2:], words[0])
                return command(flags, words[2:])
        handled = kubectl_pods(flags, words)
        if handled is not None:
            return handled
        raise KubectlExit("kubectl stand-in: not implemented: {}".format(" ".join(words)))
    except FlagError as exc:
        print(f"Error: {exc}\nSee 'kubectl --help' for usage.", file=sys.stderr)
        return 1
    except KubectlExit as exc:
        print(exc.message, file=sys.stderr)
        return exc.code


def kubectl_version(flags):
    if flags.get("short"):
        print(f"Client Version: {VERSION}")
    else:
        print(f"Client Version: {version_info()}")
    if not flags.get("client"):
        connect(flags)
        print("Server Version: %s" % (VERSION if flags.get("short") else version_info()))
    return 0


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
    if not tcp_accepts(host, port):
        raise KubectlExit(
            f"The connection to the server {host}:{port} was refused - did you specify the right "
            "host or port?"
        )
    if not apiserver_up(host, port):
        raise KubectlExit('error: the server doesn\'t have a resource type "nodes"')


def node_view(node, heartbeats):
    """A node as the API server would return it: Ready goes Unknown when the kubelet stops posting."""
    node = json.loads(json.dumps(node))
    cond = node["status"]["conditions"][0]
    beat = heartbeats.get(node["metadata"]["name"], 0)
    if time.time() - beat > 10 or not tcp_accepts("127.0.0.1", 10250):
        cond.update(
            status="Unknown",
            reason="NodeStatusUnknown",
            message="Kubelet stopped posting node status.",
        )
    return node


def kubectl_get_nodes(flags, names):
    state = read_state()
    nodes = [node_view(n, state["heartbeats"]) for _, n in sorted(state["nodes"].items())]
    if names:
        missing = [n for n in names if n not in state["nodes"]]
        if missing:
            raise KubectlExit(f'Error from server (NotFound): nodes "{missing[0]}" not found')
        nodes = [n for n in nodes if n["metadata"]["name"] in names]
    output = flags.get("output", "")
    if output == "json":
        if len(names) == 1:
            print(json.dumps(nodes[0], indent=4))
        else:
            print(
                json.dumps(
                    {
                        "apiVersion": "v1",
                        "items": nodes,
                        "kind": "List",
                        "metadata": {"resourceVersion": "", "selfLink": ""},
                    },
                    indent=4,
                )
            )
    elif output == "name":
        for n in nodes:
            print("node/{}".format(n["metadata"]["name"]))
    elif output in ("", "wide"):
        if not nodes:
            print("No resources found.", file=sys.stderr)
            return 0
        rows = [("NAME", "STATUS", "ROLES", "AGE", "VERSION")]
        for n in nodes:
            status = {"True": "Ready", "False": "NotReady"}.get(
                n["status"]["conditions"][0]["status"], "NotReady"
            )
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
                    status,
                    roles,
                    "1m",
                    n["status"]["nodeInfo"]["kubeletVersion"],
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        start = 1 if flags.get("no-headers") else 0
        for r in rows[start:]:
            print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    else:
        raise KubectlExit(f"error: kubectl stand-in: output format {output!r} not implemented")
    return 0


def kubectl_taint(flags, words):
    if flags.get("all"):
        targets, specs = None, words
    else:
        if not words:
            raise KubectlExit("error: at least one taint update is required")
        targets, specs = [words[0]], words[1:]
    if not specs:
        raise KubectlExit("error: at least one taint update is required")
    with State() as state:
        names = targets if targets is not None else sorted(state["nodes"])
        for name in names:
            node = state["nodes"].get(name)
            if node is None:
                raise KubectlExit(f'Error from server (NotFound): nodes "{name}" not found')
            taints = node["spec"].setdefault("taints", [])
            for spec in specs:
                if spec.endswith("-"):
                    key, _, effect = spec[:-1].partition(":")
                    key = key.split("=", 1)[0]
                    keep = [
                        t
                        for t in taints
                        if not (t["key"] == key and (not effect or t["effect"] == effect))
                    ]
                    if len(keep) == len(taints):
                        raise KubectlExit(f'error: taint "{spec[:-1]}" not found')
                    taints[:] = keep
                else:
                    m = re.match(
                        r"^([^=:]+)(?:=([^:]*))?:(NoSchedule|PreferNoSchedule|NoExecute)$", spec
                    )
                    if not m:
                        raise KubectlExit(f"error: invalid taint spec: {spec}")
                    new = {"key": m.group(1), "effect": m.group(3)}
                    if m.group(2):
                        new["value"] = m.group(2)
                    if any(t["key"] == new["key"] and t["effect"] == new["effect"] for t in taints):
                        if not flags.get("overwrite"):
                            raise KubectlExit(
                                "error: Node {} already has {} taint(s) with same effect(s) and "
                                "--overwrite is false".format(name, new["key"])
                            )
                        taints[:] = [
                            t
                            for t in taints
                            if not (t["key"] == new["key"] and t["effect"] == new["effect"])
                        ]
                    taints.append(new)
            if not taints:
                node["spec"].pop("taints")
            print(
                "node/{} {}".format(
                    name, "untainted" if all(s.endswith("-") for s in specs) else "tainted"
                )
            )
    return 0


def kubectl_set_metadata(flags, words, verb):
    """kubectl annotate|label nodes (NAME | --all) KEY=VALUE... KEY-..."""
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
                if key in meta and not flags.get("overwrite"):
                    if verb == "annotate":
                        raise KubectlExit(
                            "error: --overwrite is false but found the following declared "
                            f"annotation(s): '{key}' already has a value ({meta[key]})"
                        )
                    raise KubectlExit(
                        f"error: '{key}' already has a value ({meta[key]}), and --overwrite is false"
                    )
                meta[key] = value
            print(f"node/{name} {'annotated' if verb == 'annotate' else 'labeled'}")
    return 0


# ==========================================================================
# pods: what `frakti-install verify` looks at
#
# kubectl: create -f - [-o json] of a Pod, get pods [-l SELECTOR] [-o json], logs,
# get events --field-selector -o json, delete pod [--ignore-not-found]; the same
# verbs and texts as the Kubernetes 1.31 stand-in (kata/standins/kube131.py, whose
# comments give the sources), kept apart because build.py inlines only
# common.py. The kubelet runs the pods bound to its node (spec.nodeName; there is
# no scheduler here) once each, through its runtime: with --container-runtime=
# remote the CRI endpoint (the frakti stand-in's `RunPod` request, see
# standins/frakti.py), with docker (dockershim) on this host.
# nodeInfo.bootID and kernelVersion: the host's boot id and `uname -r`
# (Kubernetes API NodeSystemInfo; docs/upstream-facts.md).

KUBECTL_FLAGS.update({"filename": "list", "field-selector": "str", "ignore-not-found": "bool"})
KUBECTL_SHORT["f"] = "filename"
POD_WORDS = ("pods", "pod", "po")
EVENT_WORDS = ("events", "event", "ev")
BOOT_ID = "/proc/sys/kernel/random/boot_id"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
COMMAND_TIMEOUT = 60
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def node_boot_info():
    return {"bootID": read_text(BOOT_ID).strip(), "kernelVersion": os.uname().release}


def _pods_namespace(flags):
    return flags.get("namespace") or "default"


def _matches(labels, selector):
    for term in filter(None, (selector or "").split(",")):
        key, eq, value = term.partition("=")
        if eq and (labels.get(key.rstrip("=!")) == value) == key.endswith("!"):
            return False
        if not eq and key not in labels:
            return False
    return True


def _print_list(items):
    print(
        json.dumps(
            {
                "apiVersion": "v1",
                "items": items,
                "kind": "List",
                "metadata": {"resourceVersion": "", "selfLink": ""},
            },
            indent=4,
        )
    )


def kubectl_pods(flags, words):
    """kubectl's verbs on pods and events; None when `words` is none of them."""
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
        return kubectl_delete_pods(flags, words[2:])
    return None


def kubectl_create(flags):
    if flags.get("filename", []) != ["-"]:
        raise KubectlExit("kubectl stand-in: only `create -f -` (stdin) is implemented")
    try:
        obj = json.loads(sys.stdin.read())
    except ValueError as exc:
        raise KubectlExit(f"error: error parsing STDIN: {exc}") from None
    name = (obj.get("metadata") or {}).get("name")
    if (obj.get("kind"), obj.get("apiVersion")) != ("Pod", "v1"):
        raise KubectlExit("kubectl stand-in: create of anything but a v1 Pod is not implemented")
    if not name or not DNS_SUBDOMAIN.match(name):
        raise KubectlExit(
            f'The Pod "{name or ""}" is invalid: metadata.name: Invalid value: "{name or ""}": '
            "a DNS-1123 subdomain must consist of lower case alphanumeric characters, '-' or "
            "'.', and must start and end with an alphanumeric character"
        )
    meta = dict(obj.get("metadata") or {})
    meta.update(
        namespace=meta.get("namespace") or "default",
        uid=str(uuid.uuid4()),
        creationTimestamp=now_iso(),
    )
    spec = json.loads(json.dumps(obj.get("spec") or {}))
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("schedulerName", "default-scheduler")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }
    key = f"{meta['namespace']}/{name}"
    with State() as state:
        pods = state.setdefault("pods", {})
        if key in pods:
            raise KubectlExit(
                f'Error from server (AlreadyExists): error when creating "STDIN": '
                f'pods "{name}" already exists'
            )
        state["resourceVersion"] = state.get("resourceVersion", 100) + 1
        meta["resourceVersion"] = str(state["resourceVersion"])
        pods[key] = pod
    print(json.dumps(pod, indent=4) if flags.get("output") == "json" else f"pod/{name} created")
    return 0


def kubectl_get_pods(flags, names):
    namespace = _pods_namespace(flags)
    pods = read_state().get("pods", {})
    for name in names:
        if f"{namespace}/{name}" not in pods:
            raise KubectlExit(f'Error from server (NotFound): pods "{name}" not found')
    items = [pods[f"{namespace}/{n}"] for n in names] or [
        pod
        for key, pod in sorted(pods.items())
        if not names
        and key.split("/", 1)[0] == namespace
        and _matches(pod["metadata"].get("labels") or {}, flags.get("selector"))
    ]
    if flags.get("output") != "json":
        raise KubectlExit("kubectl stand-in: get pods is only implemented with -o json")
    if len(names) == 1:
        print(json.dumps(items[0], indent=4))
    else:
        _print_list(items)
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

    if flags.get("output") != "json":
        raise KubectlExit("kubectl stand-in: get events is only implemented with -o json")
    _print_list(
        [
            e
            for e in read_state().get("events", [])
            if e["metadata"]["namespace"] == namespace
            and all(field(e, k) == v for k, v in wanted.items())
        ]
    )
    return 0


def kubectl_logs(flags, words):
    if not words:
        raise KubectlExit("error: expected 'logs (POD | TYPE/NAME) [CONTAINER_NAME]'.")
    namespace, name = _pods_namespace(flags), words[0]
    state = read_state()
    pod = state.get("pods", {}).get(f"{namespace}/{name}")
    if pod is None:
        raise KubectlExit(f'Error from server (NotFound): pods "{name}" not found')
    container = (pod["spec"].get("containers") or [{}])[0].get("name", "")
    statuses = pod["status"].get("containerStatuses") or [{"state": {"waiting": {}}}]
    for status in statuses:
        waiting = (status.get("state") or {}).get("waiting")
        if waiting is not None:
            raise KubectlExit(
                f'Error from server (BadRequest): container "{container}" in pod "{name}" '
                f"is waiting to start: {waiting.get('reason', 'ContainerCreating')}"
            )
    sys.stdout.write(state.get("podlogs", {}).get(pod["metadata"]["uid"], ""))
    return 0


def kubectl_delete_pods(flags, names):
    if not names:
        raise KubectlExit("error: resource(s) were provided, but no name was specified")
    namespace = _pods_namespace(flags)
    missing = []
    with State() as state:
        pods = state.setdefault("pods", {})
        for name in names:
            gone = pods.pop(f"{namespace}/{name}", None)
            if gone is None:
                missing.append(name)
                continue
            state.setdefault("podlogs", {}).pop(gone["metadata"]["uid"], None)
            print(f'pod "{name}" deleted')
    if missing and not flags.get("ignore-not-found"):
        for name in missing:
            print(f'Error from server (NotFound): pods "{name}" not found', file=sys.stderr)
        return 1
    return 0


# --- the kubelet's side ----------------------------------------------------------
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
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
    )


def _pod_request(pod):
    container = (pod["spec"].get("containers") or [{}])[0]
    return {
        "name": pod["metadata"]["name"],
        "privileged": bool((container.get("securityContext") or {}).get("privileged")),
        "argv": list(container.get("command") or []) + list(container.get("args") or []),
    }


def run_on_host(argv, name):
    """(exit code, output) of argv run on this host, as a container of docker's."""
    if not argv:
        return 0, ""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            cwd="/",
            env={"PATH": HOST_PATH, "HOSTNAME": name},
        )
    except subprocess.TimeoutExpired:
        return 137, ""
    except OSError as exc:
        return 128, f"{exc}\n"
    return done.returncode, done.stdout + done.stderr


def cri_run(path, request):
    """The CRI runtime's answer to a RunPod request (after its status line), or None."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(COMMAND_TIMEOUT + 10)
    try:
        sock.connect(path)
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall((json.dumps({"RunPod": request}) + "\n").encode())
        line = reader.readline()
        return json.loads(line) if line.strip() else None
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


def _run_pod(kubelet, pod):
    """(sandbox failure, exit code, output): the pod run by the kubelet's runtime."""
    request = _pod_request(pod)
    if kubelet.runtime != "remote":
        return (None, *run_on_host(request["argv"], request["name"]))
    reply = cri_run(unix_path(kubelet.endpoint), request)
    if reply is None:
        return (
            (
                "Failed to create pod sandbox: rpc error: code = Unavailable desc = "
                "grpc: the connection is unavailable"
            ),
            None,
            "",
        )
    if reply.get("error"):
        return f"Failed to create pod sandbox: {reply['error']}", None, ""
    return None, reply["exitCode"], reply["output"]


def kubelet_sync_pods(kubelet):
    """Run the pods bound to this node that are still Pending, each once; a pod whose
    sandbox cannot be made stays Pending (retried each sync), as the kubelet does."""
    node = kubelet.node
    pending = [
        (key, pod)
        for key, pod in sorted(read_state().get("pods", {}).items())
        if pod["spec"].get("nodeName") == node and pod["status"].get("phase") == "Pending"
    ]
    for key, pod in pending:
        failure, code, output = _run_pod(kubelet, pod)
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
            }
            if failure:
                _event(state, current, "Warning", "FailedCreatePodSandBox", failure, node, now)
                status["containerStatuses"] = [
                    dict(base, state={"waiting": {"reason": "ContainerCreating"}})
                ]
                deadline = current["spec"].get("activeDeadlineSeconds")
                started = time.mktime(time.strptime(status["startTime"], "%Y-%m-%dT%H:%M:%SZ"))
                if deadline and time.mktime(time.gmtime()) - started > int(deadline):
                    status.update(
                        phase="Failed",
                        reason="DeadlineExceeded",
                        message="Pod was active on the node longer than the specified deadline",
                    )
                continue
            runtime = "docker" if kubelet.runtime != "remote" else "hyper"
            container_id = (
                f"{runtime}://" + hashlib.sha256(current["metadata"]["uid"].encode()).hexdigest()
            )
            for reason, text in (
                ("Created", "Created container"),
                ("Started", "Started container"),
            ):
                _event(state, current, "Normal", reason, text, node, now)
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
            status["phase"] = "Succeeded" if code == 0 else "Failed"
            state.setdefault("podlogs", {})[current["metadata"]["uid"]] = output


if __name__ == "__main__":
    # looked up here, so that code appended above this line can replace them
    mains = {"kubeadm": kubeadm_main, "kubelet": kubelet_main, "kubectl": kubectl_main}
    sys.exit(mains[PROGRAM](sys.argv[1:]))
