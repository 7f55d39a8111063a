#!/bin/sh
# TEST STAND-IN, not Kata Containers. It imitates two programs of the Kata
# Containers @KATA_VERSION@ static release (kata-static-@KATA_VERSION@-amd64.tar.xz,
# /opt/kata/bin/) for frakti-install's kata-profile end-to-end test, which
# cannot download the real one: containerd-shim-kata-v2 and kata-runtime.
# Both answer their version flags as the real programs do; neither starts a
# VM (the test host has no KVM), so everything else fails with a message.
# katalab.py fills in the version and packs this file under both names.
case "$(basename "$0")" in
containerd-shim-kata-v2)
    case "$1" in
    -v | --v | -version | --version)
        echo "Kata Containers containerd shim (Golang): id: \"io.containerd.kata.v2\", version: @KATA_VERSION@, commit: 0000000standin"
        exit 0
        ;;
    esac
    echo "containerd-shim-kata-v2: TEST STAND-IN, it starts no sandbox (no VM runs in this test)" >&2
    exit 1
    ;;
kata-runtime)
    case "$1" in
    -v | --version | version)
        printf 'kata-runtime  : @KATA_VERSION@\n   commit   : 0000000standin\n   OCI specs: 1.1.0+dev\n'
        exit 0
        ;;
    esac
    echo "kata-runtime: TEST STAND-IN, only --version is implemented" >&2
    exit 1
    ;;
esac
echo "$0: unknown kata stand-in program" >&2
exit 1
