#!/usr/bin/python3
# TEST STAND-IN, not frakti. It imitates the frakti v1.12 binary (the CRI
# runtime that runs pods in hyperd VMs) for frakti-install's end-to-end tests.
# build.py serves it as .../kubernetes/frakti/releases/download/<ver>/frakti.
#
# Like the real one (cmd/frakti/frakti.go, pkg/docker/privilegedruntime.go):
# - parses its flags with pflag rules: an unknown flag prints "unknown flag"
#   and exits 2;
# - exits (glog.Fatalf, 255) when --cgroup-driver is not cgroupfs|systemd,
#   when hyperd's gRPC endpoint cannot be reached, when (with the privileged
#   runtime enabled, the default) docker cannot be asked for its info or uses
#   another cgroup driver, or when a streaming port cannot be bound;
# - then serves the CRI on the unix socket --listen. Instead of gRPC, every
#   connection gets one JSON line: the runtime's version and status
#   (RuntimeReady: hyperd reachable; NetworkReady: a CNI config in
#   --cni-net-dir), which the kubelet and crictl stand-ins read. A client
#   may then send one line {"RunPod": {"name", "privileged", "argv"}}, the
#   stand-in's shortcut for RunPodSandbox + CreateContainer + StartContainer:
#   privileged pods run with docker on the host (frakti's privileged
#   runtime), the others "in a hyperd VM" (argv sees the guest kernel's
#   release in `uname -r` and a fresh boot id per sandbox); with hyperd's
#   gRPC down the sandbox fails with gRPC's Unavailable (the exact text of
#   frakti 1.12 is not confirmed from a source).
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from common import (  # build.py replaces this statement with common.py itself
    FlagError,
    fatal,
    glog,
    interface_ipv4,
    listen_tcp,
    parse_flags,
    set_process_name,
    tcp_accepts,
    unix_path,
)

VERSION = "@VERSION@"
MIN_HYPERD = (1, 1, 0)


FLAGS = {
    "listen": "str",
    "hyper-endpoint": "str",
    "streaming-server-port": "str",
    "streaming-server-addr": "str",
    "cni-net-dir": "str",
    "cni-plugin-dir": "str",
    "docker-endpoint": "str",
    "enable-privileged-runtime": "bool",
    "enable-unikernel-runtime": "bool",
    "enable-unikernel-log": "bool",
    "cgroup-driver": "str",
    "root-directory": "str",
    "cpu": "int",
    "memory": "int",
    "pod-infra-container-image": "str",
    # glog / k8s logs flags
    "v": "str",
    "log-dir": "str",
    "logtostderr": "bool",
    "alsologtostderr": "bool",
    "stderrthreshold": "str",
    "vmodule": "str",
    "log-backtrace-at": "str",
    "log-flush-frequency": "str",
    "help": "bool",
}
DEFAULTS = {
    "listen": "/var/run/frakti.sock",
    "hyper-endpoint": "127.0.0.1:22318",
    "streaming-server-port": "22521",
    "streaming-server-addr": "",
    "cni-net-dir": "/etc/cni/net.d",
    "cni-plugin-dir": "/opt/cni/bin",
    "docker-endpoint": "unix:///var/run/docker.sock",
    "enable-privileged-runtime": True,
    "cgroup-driver": "cgroupfs",
    "root-directory": "/var/lib/frakti",
}
PRIVILEGED_STREAMING_PORT = 22522
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
# The release `uname -r` prints in a hyperd VM: hyperstart's guest kernel. The
# stand-in's kernel file (build.py) boots nothing, so the release is this
# stand-in's choice (not confirmed from a source), only required to differ
# from the host's.
GUEST_KERNEL = "4.12.4-hyper"
# A stand-in-only fault: with this set to 1 in its environment, frakti runs
# non-privileged pods on the host, as a frakti that lost its hyper runtime would.
PODS_ON_HOST_ENV = "FRAKTI_STANDIN_PODS_ON_HOST"


def usage():
    lines = ["Usage of frakti:"]
    lines += [f"      --{name}" for name in sorted(FLAGS)]
    return "\n".join(lines)


def local_ipv4():
    """frakti's network.GetLocalIPAddress: the first non-loopback IPv4 address, or ""."""
    for _, name in socket.if_nameindex():
        addr = interface_ipv4(name)
        if addr and not addr.startswith("127."):
            return addr
    return ""


def hyperd_version(endpoint, deadline):
    """hyperd's version string from its gRPC endpoint, retrying until deadline; raises OSError."""
    host, _, port = endpoint.rpartition(":")
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2) as s:
                s.settimeout(2)
                banner = s.recv(256).decode(errors="replace").split()
            return banner[1] if len(banner) > 1 and banner[0] == "hyperd" else ""
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=5)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.path)


def docker_info(endpoint):
    conn = UnixHTTPConnection(unix_path(endpoint))
    try:
        conn.request("GET", "/info")
        resp = conn.getresponse()
        if resp.status != 200:
            raise OSError(f"docker answered {resp.status}")
        return json.loads(resp.read().decode())
    finally:
        conn.close()


def cni_status(conf_dir):
    """(ready, message) of the CNI network, as frakti's ocicni reports it."""
    try:
        names = sorted(
            n for n in os.listdir(conf_dir) if n.endswith((".conf", ".conflist", ".json"))
        )
    except OSError:
        names = []
    for name in names:
        try:
            with open(os.path.join(conf_dir, name)) as fh:
                conf = json.load(fh)
        except (OSError, ValueError):
            continue
        plugins = conf.get("plugins") if name.endswith(".conflist") else [conf]
        if (
            conf.get("name")
            and plugins
            and all(isinstance(p, dict) and p.get("type") for p in plugins)
        ):
            return True, ""
    return False, "cni config uninitialized"


def listen_streaming(addr, port):
    host = addr
    if addr:
        try:
            host = socket.getaddrinfo(addr, None, socket.AF_INET)[0][4][0]
        except OSError as exc:
            fatal(
                f"Failed to start streaming server: listen tcp {addr}:{port}: lookup {addr}: {exc.strerror or exc}"
            )
    try:
        sock = listen_tcp(host or "0.0.0.0", int(port))
    except OSError as exc:
        fatal(
            f"Failed to start streaming server: listen tcp {addr}:{port}: bind: {(exc.strerror or str(exc)).lower()}"
        )
    threading.Thread(target=accept_and_close, args=(sock,), daemon=True).start()
    glog("I", f"Streaming server is listening on: {addr}:{port}")


def accept_and_close(sock):
    while True:
        conn, _ = sock.accept()
        conn.close()


def main(args):
    try:
        flags, positionals = parse_flags(args, FLAGS)
    except FlagError as exc:
        print(f"{exc}\n{usage()}", file=sys.stderr)
        return 2
    if flags.get("help"):
        print(usage(), file=sys.stderr)
        return 0
    opts = dict(DEFAULTS, **flags)
    set_process_name("frakti")
    glog("I", "frakti version: {}".format(VERSION.lstrip("v")))
    if opts["cgroup-driver"] not in ("cgroupfs", "systemd"):
        fatal("cgroup-driver flag should only be set as 'cgroupfs' or 'systemd'")

    # 1. hyper runtime and its streaming server
    addr = opts["streaming-server-addr"] or local_ipv4()
    endpoint = opts["hyper-endpoint"]
    try:
        version = hyperd_version(endpoint, time.time() + 5)
    except OSError as exc:
        fatal(
            "Initialize hyper runtime failed: rpc error: code = Unavailable desc = all SubConns are in "
            'TransientFailure, latest connection error: connection error: desc = "transport: Error while '
            f'dialing dial tcp {endpoint}: connect: {(exc.strerror or str(exc)).lower()}"'
        )
    parsed = tuple(int(x) for x in re.findall(r"\d+", version)[:3]) if version else ()
    if parsed < MIN_HYPERD:
        fatal(
            "Initialize hyper runtime failed: proto: bad wiretype for field types.UserInterface.Gateway: "
            "got wiretype 2, want 0 (hyperd {}; frakti {} needs hyperd >= {})".format(
                version or "unknown", VERSION, ".".join(map(str, MIN_HYPERD))
            )
        )
    glog("I", f"hyperd version {version} at {endpoint}")
    os.makedirs(opts["root-directory"], exist_ok=True)
    listen_streaming(addr, opts["streaming-server-port"])

    # 2. privileged runtime (docker through dockershim)
    if opts["enable-privileged-runtime"]:
        glog("I", "Initialize privileged runtime: docker runtime")
        try:
            info = docker_info(opts["docker-endpoint"])
        except (OSError, ValueError, http.client.HTTPException):
            fatal(
                "Initialize privileged runtime failed: failed to get info from docker: Cannot connect to the "
                "Docker daemon at {}. Is the docker daemon running?".format(opts["docker-endpoint"])
            )
        driver = info.get("CgroupDriver", "")
        if driver and driver != opts["cgroup-driver"]:
            fatal(
                'Initialize privileged runtime failed: misconfiguration: frakti cgroup driver: "{}" is '
                'different from docker cgroup driver: "{}"'.format(opts["cgroup-driver"], driver)
            )
        listen_streaming(addr, PRIVILEGED_STREAMING_PORT)

    # 3. serve the CRI
    path = unix_path(opts["listen"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
    except OSError as exc:
        fatal(f"listen unix {path}: bind: {(exc.strerror or str(exc)).lower()}")
    server.listen(64)
    glog("I", f"Start frakti at {path}")
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve_cri, args=(conn, opts, endpoint), daemon=True).start()


def serve_cri(conn, opts, endpoint):
    """One connection: the status line, then the answer to a RunPod request if one comes."""
    try:
        hyperd_up = tcp_accepts(*endpoint.rsplit(":", 1), timeout=1)
        net_ready, net_message = cni_status(opts["cni-net-dir"])
        answer = {
            "version": {
                "version": "0.1.0",
                "runtimeName": "hyper",
                "runtimeVersion": VERSION.lstrip("v"),
                "runtimeApiVersion": "0.1.0",
            },
            "status": {
                "conditions": [
                    {
                        "type": "RuntimeReady",
                        "status": hyperd_up,
                        "reason": "" if hyperd_up else "HyperdNotReachable",
                        "message": "" if hyperd_up else f"hyperd is not reachable at {endpoint}",
                    },
                    {
                        "type": "NetworkReady",
                        "status": net_ready,
                        "reason": "" if net_ready else "NetworkPluginNotReady",
                        "message": net_message,
                    },
                ]
            },
        }
        conn.sendall((json.dumps(answer) + "\n").encode())
        conn.settimeout(2)
        line = conn.makefile("rb").readline()
        if not line.strip():
            return
        request = json.loads(line).get("RunPod") or {}
        conn.settimeout(None)
        conn.sendall((json.dumps(run_pod(request, opts, endpoint)) + "\n").encode())
    except (OSError, ValueError):
        pass
    finally:
        conn.close()


def run_pod(request, opts, endpoint):
    """{"error": text} or {"exitCode", "output"}: privileged pods by docker on this host
    (pkg/docker/privilegedruntime.go), the others in a hyperd VM (pkg/hyper)."""
    argv, name = list(request.get("argv") or []), str(request.get("name") or "")
    if request.get("privileged") and opts["enable-privileged-runtime"]:
        try:
            docker_info(opts["docker-endpoint"])
        except (OSError, ValueError, http.client.HTTPException):
            return {
                "error": "rpc error: code = Unknown desc = Cannot connect to the Docker daemon at "
                "{}. Is the docker daemon running?".format(opts["docker-endpoint"])
            }
        return run_argv(argv, name, guest=None)
    if not tcp_accepts(*endpoint.rsplit(":", 1), timeout=1):
        return {
            "error": "rpc error: code = Unavailable desc = all SubConns are in TransientFailure, "
            'latest connection error: connection error: desc = "transport: Error while dialing '
            f'dial tcp {endpoint}: connect: connection refused"'
        }
    on_host = os.environ.get(PODS_ON_HOST_ENV) == "1"
    return run_argv(argv, name, guest=None if on_host else GUEST_KERNEL)


def run_argv(argv, name, guest):
    """argv run on this host, or (guest: a kernel release) as in a freshly booted VM of
    that kernel: `uname -r` prints it, the boot id file holds a fresh random id."""
    if not argv:
        return {"exitCode": 0, "output": ""}
    env = {"PATH": HOST_PATH, "HOSTNAME": name}
    with tempfile.TemporaryDirectory(prefix="frakti-standin-vm.") as vm:
        if guest is not None:
            with open(os.path.join(vm, "boot_id"), "w") as fh:
                fh.write(str(uuid.uuid4()) + "\n")
            wrappers = {
                "uname": f'#!/bin/sh\nif [ "$1" = -r ]; then echo "{guest}"; '
                'else exec /bin/uname "$@"; fi\n',
                "cat": "#!/bin/sh\n[ $# = 0 ] && exec /bin/cat\nfor f; do\n"
                f'  if [ "$f" = {BOOT_ID} ]; then /bin/cat "{vm}/boot_id"; '
                'else /bin/cat "$f" || exit 1; fi\ndone\n',
            }
            for tool, text in wrappers.items():
                with open(os.path.join(vm, tool), "w") as fh:
                    fh.write(text)
                os.chmod(os.path.join(vm, tool), 0o755)
            env["PATH"] = vm + ":" + HOST_PATH
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=60, cwd="/", env=env
            )
        except subprocess.TimeoutExpired:
            return {"exitCode": 137, "output": ""}
        except OSError as exc:
            return {"exitCode": 128, "output": f"{exc}\n"}
    return {"exitCode": done.returncode, "output": done.stdout + done.stderr}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
