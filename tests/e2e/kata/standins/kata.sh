#!/bin/sh
# TEST STAND-IN, not Kata Containers. It imitates two programs of the Kata
# Containers @KATA_VERSION@ static release (kata-static-@KATA_VERSION@-amd64.tar.xz,
# /opt/kata/bin/) for frakti-install's kata-profile end-to-end test, which
# cannot download the real one: containerd-shim-kata-v2 and kata-runtime.
# Both answer their version flags as the real programs do; neither starts a
# VM (the test host has no KVM), so everything else fails with a message,
# but for one subcommand of the stand-in's own (no such thing in Kata):
#   containerd-shim-kata-v2 standin-run -- ARGV...
# how the stand-in kubelet (kube131.py) has a pod's container run in a
# "sandbox" of this runtime: ARGV runs with a guest of its own as far as the
# verify probe looks, `uname -r` printing the guest kernel's release (that of
# the tarball's vmlinux.container, vmlinux-<release>) and
# /proc/sys/kernel/random/boot_id a boot id of this sandbox alone (a fresh
# random one, as a freshly booted VM kernel has).
# katalab.py fills in the version and the shim's language and packs this
# file under both names (and as runtime-rs's shim from 4.0.0).
case "$(basename "$0")" in
containerd-shim-kata-v2)
    case "$1" in
    -v | --v | -version | --version)
        # the Go shim's text; the Rust shim's exact text is not confirmed (the
        # installer reads only the exit status of --version)
        echo "Kata Containers containerd shim (@SHIM_LANGUAGE@): id: \"io.containerd.kata.v2\", version: @KATA_VERSION@, commit: 0000000standin"
        exit 0
        ;;
    standin-run)
        shift
        [ "$1" = "--" ] && shift
        guest=$(mktemp -d /tmp/kata-standin-guest.XXXXXX) || exit 1
        kernel=$(readlink /opt/kata/share/kata-containers/vmlinux.container)
        if [ -z "$kernel" ]; then
            echo "containerd-shim-kata-v2: TEST STAND-IN: no guest kernel (/opt/kata/share/kata-containers/vmlinux.container)" >&2
            exit 1
        fi
        /bin/cat /proc/sys/kernel/random/uuid >"$guest/boot_id"
        printf '#!/bin/sh\nif [ "$1" = -r ]; then echo "%s"; else exec /bin/uname "$@"; fi\n' \
            "${kernel#vmlinux-}" >"$guest/uname"
        printf '#!/bin/sh\n[ $# = 0 ] && exec /bin/cat\nfor f; do\n  if [ "$f" = /proc/sys/kernel/random/boot_id ]; then /bin/cat "%s/boot_id"; else /bin/cat "$f" || exit 1; fi\ndone\n' \
            "$guest" >"$guest/cat"
        chmod 755 "$guest/uname" "$guest/cat"
        PATH="$guest:$PATH" "$@"
        rc=$?
        rm -rf "$guest"
        exit $rc
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
