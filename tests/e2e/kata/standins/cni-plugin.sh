#!/bin/sh
# TEST STAND-IN, not the CNI plugins. It imitates one plugin of the
# kubernetes-cni @CNI_VERSION@ package of pkgs.k8s.io (/opt/cni/bin/<name>,
# containernetworking/plugins) for frakti-install's kata-profile end-to-end
# test: it answers CNI_COMMAND=VERSION like the real plugins and refuses to
# set up a network (no pod runs in this test). katalab.py packs it under
# each plugin's name.
name=$(basename "$0")
case "$CNI_COMMAND" in
VERSION)
    echo '{"cniVersion":"1.0.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0"]}'
    exit 0
    ;;
"")
    echo "CNI $name plugin v@CNI_VERSION@ (TEST STAND-IN)" >&2
    echo "CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0" >&2
    exit 1
    ;;
esac
echo "{\"code\": 999, \"msg\": \"CNI $name plugin: TEST STAND-IN, $CNI_COMMAND is not implemented\"}"
exit 1
