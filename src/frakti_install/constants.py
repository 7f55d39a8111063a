"""Paths every layer names: where kubeadm leaves a cluster's files."""

ADMIN_CONF = "/etc/kubernetes/admin.conf"  # written by kubeadm init: this host is a master
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"  # written by init and join: this host is a node
MANIFESTS = "/etc/kubernetes/manifests"
KUBELET_UNIT = "kubelet.service"
