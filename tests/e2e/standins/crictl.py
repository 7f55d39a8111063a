#!/usr/bin/python3
# TEST STAND-IN, not crictl. It imitates crictl @VERSION@ (cri-tools) for
# frakti-install's end-to-end tests; build.py packs it alone into
# crictl-<ver>-linux-amd64.tar.gz like the upstream release.
#
# Implemented: --version, and `info`, `version`, `pods`, `ps`, `images`
# against the runtime endpoint (-r/--runtime-endpoint, then
# $CONTAINER_RUNTIME_ENDPOINT, then /etc/crictl.yaml, then the 1.12 default
# unix:///var/run/dockershim.sock). They fail like crictl when nothing accepts
# on the socket. The runtime answers with one JSON line (the frakti stand-in).
import json
import os
import sys

from common import (  # build.py replaces this statement with common.py itself
    FlagError,
    now_iso,
    parse_flags,
    read_simple_yaml,
    unix_path,
    unix_request,
)

VERSION = "@VERSION@"


FLAGS = {
    "runtime-endpoint": "str",
    "r": "str",
    "image-endpoint": "str",
    "i": "str",
    "timeout": "str",
    "t": "str",
    "debug": "bool",
    "D": "bool",
    "config": "str",
    "c": "str",
    "version": "bool",
    "v": "bool",
    "help": "bool",
    "h": "bool",
    "quiet": "bool",
    "q": "bool",
    "all": "bool",
    "a": "bool",
    "output": "str",
    "o": "str",
}


def endpoint(flags):
    value = (
        flags.get("runtime-endpoint")
        or flags.get("r")
        or os.environ.get("CONTAINER_RUNTIME_ENDPOINT")
    )
    if value:
        return value
    config = flags.get("config") or flags.get("c") or "/etc/crictl.yaml"
    if os.path.exists(config):
        value = read_simple_yaml(config).get("runtime-endpoint")
        if value:
            return value
    return "unix:///var/run/dockershim.sock"


def main(args):
    try:
        flags, words = parse_flags(args, FLAGS, style="go", normalize=False)
    except FlagError as exc:
        print(f"Incorrect Usage: {exc}", file=sys.stderr)
        return 1
    if flags.get("version") or flags.get("v"):
        print(f"crictl version {VERSION}")
        return 0
    if not words:
        print("crictl - client for CRI (TEST STAND-IN)\nCOMMANDS: info, version, pods, ps, images")
        return 0
    command, rest = words[0], words[1:]
    sub, _ = parse_flags(rest, FLAGS, style="go", normalize=False)
    flags.update(sub)
    target = endpoint(flags)
    line = unix_request(unix_path(target))
    if line is None:
        print(
            f'time="{now_iso()}" level=fatal msg="connect: connect endpoint \'{target}\', make sure you are running as root '
            'and the endpoint has been started: context deadline exceeded"',
            file=sys.stderr,
        )
        return 1
    try:
        answer = json.loads(line.decode()) if line else {}
    except ValueError:
        answer = {}
    if command == "info":
        print(json.dumps({"status": answer.get("status", {})}, indent=2))
    elif command == "version":
        v = answer.get("version", {})
        print(
            "Version:  {}\nRuntimeName:  {}\nRuntimeVersion:  {}\nRuntimeApiVersion:  {}".format(
                v.get("version", "0.1.0"),
                v.get("runtimeName", ""),
                v.get("runtimeVersion", ""),
                v.get("runtimeApiVersion", ""),
            )
        )
    elif command in ("pods", "ps", "images"):
        if not (flags.get("quiet") or flags.get("q")):
            print(
                {
                    "pods": "POD ID              CREATED             STATE               NAME                "
                    "NAMESPACE           ATTEMPT",
                    "ps": "CONTAINER ID        IMAGE               CREATED             STATE               "
                    "NAME                ATTEMPT             POD ID",
                    "images": "IMAGE               TAG                 IMAGE ID            SIZE",
                }[command]
            )
    else:
        print(f"crictl stand-in: command {command!r} is not implemented", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
