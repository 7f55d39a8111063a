#!/usr/bin/python3
# TEST STAND-IN, not hyperd. It imitates hyperd @VERSION@ (the HyperContainer
# daemon that runs pods in VMs) for frakti-install's end-to-end tests; build.py
# packs it as /usr/bin/hyperd into a hypercontainer .deb.
#
# Like the real one it reads /etc/hyper/config (INI-like key=value), refuses
# to start when the Kernel or Initrd file is missing or when the hypervisor
# program is not installed (qemu-system-x86_64 for Hypervisor=qemu|kvm),
# serves its API on the unix socket of Host (default /var/run/hyper.sock),
# and serves gRPC on TCP only when gRPCHost is set - which the packaged config
# does not do. Each gRPC connection gets a "hyperd <version>" line instead of
# real gRPC (the frakti stand-in reads it).
import json
import os
import socket
import sys
import threading
import time

from common import (  # build.py replaces this statement with common.py itself
    FlagError,
    fatal,
    glog,
    listen_tcp,
    parse_flags,
    set_process_name,
    unix_path,
)

VERSION = "@VERSION@"
API_VERSION = "1.23"


FLAGS = {
    "config": "str",
    "log_dir": "str",
    "v": "int",
    "nondaemon": "bool",
    "version": "bool",
    "logtostderr": "bool",
    "alsologtostderr": "bool",
    "stderrthreshold": "str",
    "vmodule": "str",
    "log_backtrace_at": "str",
    "host": "str",
    "help": "bool",
    "h": "bool",
}


def read_config(path):
    config = {}
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith(("#", ";", "[")) or "=" not in line:
                continue
            key, _, value = line.partition("=")
            config[key.strip()] = value.strip()
    return config


def serve(sock, banner):
    while True:
        conn, _ = sock.accept()
        try:
            conn.sendall(banner)
        except OSError:
            pass
        finally:
            conn.close()


def main(args):
    try:
        flags, _ = parse_flags(args, FLAGS, style="go", normalize=False)
    except FlagError as exc:
        print(f"{exc}\nUsage of hyperd:", file=sys.stderr)
        return 2
    if flags.get("version"):
        print(f"The hyperd version is {VERSION}, commit standin")
        return 0
    set_process_name("hyperd")
    path = flags.get("config", "/etc/hyper/config")
    try:
        config = read_config(path)
    except OSError as exc:
        fatal(f"read config file ({path}) failed: {exc.strerror}", 1)
    for key in ("Kernel", "Initrd"):
        f = config.get(key, "")
        if not f or not os.path.exists(f):
            fatal(
                f"Cannot find {key.lower()} file {f}: stat {f}: no such file or directory (is the hyperstart package "
                "installed?)",
                1,
            )
    # unset: hyperd probes qemu-kvm, else qemu-tcg (both run qemu-system-x86_64)
    hypervisor = config.get("Hypervisor", "") or "qemu"
    if hypervisor in ("qemu", "kvm", "qemu-kvm", "qemu-tcg"):
        if not any(
            os.access(os.path.join(d, "qemu-system-x86_64"), os.X_OK)
            for d in os.environ.get("PATH", "/usr/bin:/bin").split(":")
            + ["/usr/bin", "/usr/local/bin"]
        ):
            fatal(
                f'failed to initialize the hypervisor driver "{hypervisor}": exec: "qemu-system-x86_64": executable file '
                "not found in $PATH",
                1,
            )
    elif hypervisor == "libvirt":
        if not os.path.exists("/var/run/libvirt/libvirt-sock"):
            fatal(
                "failed to connect to libvirt: no libvirtd socket at /var/run/libvirt/libvirt-sock",
                1,
            )
    else:
        fatal(f'hyperd stand-in: hypervisor "{hypervisor}" is not imitated', 1)
    glog("I", f"The hypervisor's driver is {hypervisor}")
    time.sleep(float(os.environ.get("STANDIN_HYPERD_START_DELAY", "1")))  # daemon/storage set-up

    host = flags.get("host") or config.get("Host", "unix:///var/run/hyper.sock")
    api = unix_path(host)
    os.makedirs(os.path.dirname(api), exist_ok=True)
    if os.path.lexists(api):
        os.unlink(api)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(api)
    unix.listen(16)
    info = json.dumps(
        {
            "Version": VERSION,
            "ApiVersion": API_VERSION,
            "Hypervisor": hypervisor,
            "Kernel": config["Kernel"],
            "Initrd": config["Initrd"],
            "StorageDriver": config.get("StorageDriver", "overlay"),
            "gRPCHost": config.get("gRPCHost", ""),
        }
    )
    threading.Thread(target=serve, args=(unix, (info + "\n").encode()), daemon=True).start()
    glog("I", f"API listen on {host}")

    grpc = config.get("gRPCHost", "")
    if grpc:
        ghost, _, gport = grpc.rpartition(":")
        try:
            tcp = listen_tcp(ghost or "0.0.0.0", int(gport))
        except (OSError, ValueError) as exc:
            fatal(f"Failed to start gRPC server on {grpc}: {exc}", 1)
        threading.Thread(
            target=serve, args=(tcp, (f"hyperd {VERSION}\n").encode()), daemon=True
        ).start()
        glog("I", f"gRPC server listen on {grpc}")
    else:
        glog("I", "gRPCHost is not set: the gRPC API is not served")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
