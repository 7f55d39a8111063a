#!/usr/bin/python3
# TEST STAND-IN, not hyperctl. It imitates `hyperctl version` and
# `hyperctl info` of HyperContainer @VERSION@ for frakti-install's end-to-end
# tests (packed into the hypercontainer .deb next to the hyperd stand-in):
# both ask hyperd over its API socket and fail like the real client when
# hyperd does not answer.
import json
import sys

from common import (  # build.py replaces this statement with common.py itself
    FlagError,
    parse_flags,
    unix_path,
    unix_request,
)

VERSION = "@VERSION@"


def main(args):
    try:
        flags, words = parse_flags(
            args, {"host": "str", "H": "str", "help": "bool"}, style="go", normalize=False
        )
    except FlagError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not words or words[0] not in ("version", "info"):
        print(
            "Usage: hyperctl [OPTIONS] COMMAND (stand-in implements: version, info)",
            file=sys.stderr,
        )
        return 1
    host = flags.get("H") or flags.get("host") or "unix:///var/run/hyper.sock"
    line = unix_request(unix_path(host))
    if not line:
        print(
            "Cannot connect to the Hyper daemon. Is 'hyperd' running on this host?", file=sys.stderr
        )
        return 1
    info = json.loads(line.decode())
    if words[0] == "version":
        print(
            "Version: {}\nAPI version: {}\nOS/Arch: linux/amd64\nGit commit: standin\nHyperd Version: {}".format(
                VERSION, info["ApiVersion"], info["Version"]
            )
        )
    else:
        print(
            "Images: 0\nContainers: 0\nPODs: 0\nStorage Driver: {}\nHypervisor: {}\nKernel: {}\n"
            "Initrd: {}\nDaemon Version: {}".format(
                info["StorageDriver"],
                info["Hypervisor"],
                info["Kernel"],
                info["Initrd"],
                info["Version"],
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
