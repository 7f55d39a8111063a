# ruff: noqa
# (a fragment of the stand-in programs, in their style: it uses their names, see below)
# TEST STAND-IN, not Kubernetes: the multi-node part of the kubeadm, kubelet
# and kubectl stand-ins (tests/e2e/standins/kube.py). lab.py appends this
# file to each rendered program, just before its `if __name__` line, for the
# multi-node end-to-end tests only: names it uses (State, read_state,
# Kubelet, kubeadm_main, ...) are the stand-in's, and what it defines here
# replaces them. The shared stand-ins are not changed.
#
# On one host the "cluster" is /var/lib/standin-k8s/cluster.json. With several,
# it stays on the master, and the others reach it through the master's
# stand-in kube-apiserver: the listener the master's kubelet opens on 6443 for
# the kube-apiserver static pod sends its banner line, as before (that is all
# the single-host stand-ins look for), and then also answers requests, one
# JSON line each:
#
#   {"op": "read"}                  -> {"state": {...}}
#   {"op": "lock"}                  -> {"state": {...}}, the state now locked for
#   {"op": "write", "state": {...}} -> {"ok": true}      this connection until written
#   {"op": "join", "token": T}      -> {"ca": PEM, "kubeadm-config": {...}} or {"error": ...}
#
# Added on top:
# - `kubeadm join HOST:PORT --token T --discovery-token-ca-cert-hash sha256:H`, or
#   `kubeadm join --config=FILE` with a kubeadm.k8s.io/v1alpha3 JoinConfiguration:
#   checks the token and the CA's hash with the master, writes what kubeadm
#   1.12 writes on a worker (pki/ca.crt, kubelet.conf, the kubelet's config and
#   flags), remembers the master in /var/lib/standin-k8s/remote, restarts the
#   kubelet and waits for the node to register. A joined host's State() and
#   read_state() then go to the master; `kubeadm reset` there removes its node
#   from the cluster instead of wiping the cluster.
# - the controller-manager's node IPAM: a node registered without a podCIDR
#   gets the next free /24 of the cluster's pod subnet (the master's own node
#   gets the first, as before).
# - a node is Ready while its own kubelet answers on its InternalIP:10250 (the
#   single-host stand-in looks at 127.0.0.1).

REMOTE_MARKER = STATE_DIR + "/remote"  # "HOST:PORT" of the master's API, on a joined host
SUBNET_ANNOTATION = "frakti-install/pod-subnet"
_LocalState = State
_local_read_state = read_state


class ApiError(Exception):
    """The stand-in API server answered with an error."""


def remote_endpoint():
    try:
        with open(REMOTE_MARKER) as fh:
            value = fh.read().strip()
    except OSError:
        return None
    return server_hostport(value) if value else None


class Conversation:
    """A connection to the stand-in API server: banner first, then JSON lines."""

    def __init__(self, host, port, timeout=15):
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.file = self.sock.makefile("rwb")
        banner = self.file.readline()
        if not banner.startswith(b"kube-apiserver stand-in"):
            self.close()
            raise OSError("%s:%s is not the stand-in kube-apiserver" % (host, port))

    def ask(self, request):
        self.file.write(json.dumps(request).encode() + b"\n")
        self.file.flush()
        line = self.file.readline()
        if not line:
            raise OSError("the API server closed the connection")
        reply = json.loads(line.decode())
        if "error" in reply:
            raise ApiError(reply["error"])
        return reply

    def close(self):
        try:
            self.file.close()
        finally:
            self.sock.close()


class RemoteState:
    """State() on a joined host: the master's cluster.json, locked for this connection."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def __enter__(self):
        self.conversation = Conversation(*self.endpoint)
        self.data = self.conversation.ask({"op": "lock"})["state"]
        return self.data

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.conversation.ask({"op": "write", "state": self.data})
        finally:
            self.conversation.close()
        return False


def State():  # noqa: N802  (replaces the class of that name; used as `with State() as s`)
    endpoint = remote_endpoint()
    return RemoteState(endpoint) if endpoint else _LocalState()


def read_state():
    endpoint = remote_endpoint()
    if not endpoint:
        return _local_read_state()
    conversation = Conversation(*endpoint)
    try:
        return conversation.ask({"op": "read"})["state"]
    finally:
        conversation.close()


def allocate_pod_cidrs(state):
    """What kube-controller-manager --allocate-node-cidrs does: a free /24 per new node."""
    subnet = (state["configmaps"].get("kubeadm-config") or {}).get("podSubnet")
    if not subnet:
        return
    used = []
    for node in state["nodes"].values():
        annotations = node.get("metadata", {}).get("annotations") or {}
        for value in (node.get("spec", {}).get("podCIDR"), annotations.get(SUBNET_ANNOTATION)):
            if value:
                used.append(ipaddress.ip_network(value, strict=False))
    for name in sorted(state["nodes"]):
        spec = state["nodes"][name].setdefault("spec", {})
        if spec.get("podCIDR"):
            continue
        for candidate in ipaddress.ip_network(subnet, strict=False).subnets(new_prefix=24):
            if not any(candidate.overlaps(u) for u in used):
                spec["podCIDR"] = str(candidate)
                used.append(candidate)
                glog("I", "allocated pod CIDR %s to node %s" % (candidate, name))
                break


# -------------------------------------------------------------------------- the API side


def serve_api(conn):
    held = None
    try:
        conn.settimeout(60)
        conn.sendall(APISERVER_BANNER + b"\n")
        stream = conn.makefile("rwb")
        while True:
            line = stream.readline()
            if not line:  # a single-host stand-in only wanted the banner
                break
            request = json.loads(line.decode())
            op = request.get("op")
            if op == "read":
                reply = {"state": _local_read_state()}
            elif op == "lock" and held is None:
                held = _LocalState()
                reply = {"state": held.__enter__()}
            elif op == "write" and held is not None:
                held.data.clear()
                held.data.update(request["state"])
                allocate_pod_cidrs(held.data)
                locked, held = held, None
                locked.__exit__(None, None, None)
                reply = {"ok": True}
            elif op == "join":
                state = _local_read_state()
                if request.get("token") not in state["configmaps"].get("bootstrap-tokens", []):
                    reply = {"error": "token is invalid for this cluster or it has expired"}
                else:
                    with open(PKI + "/ca.crt") as fh:
                        ca = fh.read()
                    reply = {
                        "ca": ca,
                        "kubeadm-config": state["configmaps"].get("kubeadm-config", {}),
                    }
            else:
                reply = {"error": "stand-in API server: bad request %r" % (op,)}
            stream.write(json.dumps(reply).encode() + b"\n")
            stream.flush()
    except (OSError, ValueError):
        pass
    finally:
        if held is not None:
            held.__exit__(RuntimeError, None, None)  # unlock without writing
        conn.close()


_single_host_accept = Kubelet._accept


def _accept(sock, reply, read_request=False):
    if reply != APISERVER_BANNER + b"\n":
        return _single_host_accept(sock, reply, read_request)
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:  # the static pod was removed: its listener closed
            return
        threading.Thread(target=serve_api, args=(conn,), daemon=True).start()


Kubelet._accept = staticmethod(_accept)
_single_host_sync_node = Kubelet.sync_node


def _sync_node(self):
    try:
        _single_host_sync_node(self)
    except (OSError, ValueError, ApiError) as exc:  # the master is away: try again later
        glog("E", "Unable to update node status: %s" % exc)


Kubelet.sync_node = _sync_node


def node_view(node, heartbeats):
    """As the single-host one, but a node's kubelet is looked for on its own address."""
    node = json.loads(json.dumps(node))
    cond = node["status"]["conditions"][0]
    name = node["metadata"]["name"]
    address = "127.0.0.1"
    if name != hostname():
        for item in node["status"].get("addresses") or []:
            if item.get("type") == "InternalIP":
                address = item["address"]
    if time.time() - heartbeats.get(name, 0) > 10 or not tcp_accepts(address, 10250):
        cond.update(
            status="Unknown",
            reason="NodeStatusUnknown",
            message="Kubelet stopped posting node status.",
        )
    return node


# -------------------------------------------------------------------------- kubeadm join / reset

JOIN_FLAGS = dict(
    KUBEADM_GLOBAL,
    **{
        "token": "str",
        "discovery-token": "str",
        "tls-bootstrap-token": "str",
        "discovery-token-ca-cert-hash": "list",
        "discovery-token-unsafe-skip-ca-verification": "bool",
        "cri-socket": "str",
        "node-name": "str",
        "ignore-preflight-errors": "list",
        "config": "str",
    },
)
TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")


def kubeadm_join(args):
    opts, positionals = parse_flags(args, JOIN_FLAGS)
    if "config" in opts:
        if positionals:  # an endpoint argument is a flag kubeadm cannot mix either
            raise KubeadmExit(1, f"can not mix '--config' with arguments {positionals}")
        opts = config_opts(opts)
        positionals = [opts.pop("api-server")] if "api-server" in opts else []
    if len(positionals) != 1:
        raise KubeadmExit(1, "[discovery] exactly one API server endpoint (HOST:PORT) is needed")
    endpoint = positionals[0]
    token = opts.get("token") or opts.get("discovery-token") or ""
    if not TOKEN_RE.match(token):
        raise KubeadmExit(
            3,
            'discovery.bootstrapToken.token: Invalid value: "": the bootstrap token is invalid'
            if not token
            else "[discovery] the bootstrap token %s... is malformed" % token[:6],
        )
    hashes = opts.get("discovery-token-ca-cert-hash", [])
    if not hashes and not opts.get("discovery-token-unsafe-skip-ca-verification"):
        raise KubeadmExit(
            3,
            'discovery.bootstrapToken: Invalid value: "": using token-based '
            "discovery without caCertHashes can be unsafe. Set "
            "unsafeSkipCAVerification to continue",
        )
    crisocket = opts.get("cri-socket", DOCKERSHIM_SOCKET)
    node = (opts.get("node-name") or hostname()).lower()

    print("[preflight] running pre-flight checks")
    ignored = {i.lower() for i in opts.get("ignore-preflight-errors", [])}
    failed = [
        f
        for f in preflight_checks(opts, VERSION)
        if not f[0].startswith(("Port-", "DirAvailable--var-lib-etcd"))
    ]
    for path in (K8S_DIR + "/kubelet.conf", K8S_DIR + "/bootstrap-kubelet.conf", PKI + "/ca.crt"):
        if os.path.exists(path):
            failed.append(
                ("FileAvailable-" + path.replace("/", "-"), "ERROR", "%s already exists" % path)
            )
    if not port_free(10250):
        failed.append(("Port-10250", "ERROR", "Port 10250 is in use"))
    errors = []
    for name, level, message in failed:
        if level == "ERROR" and "all" not in ignored and name.lower() not in ignored:
            errors.append((name, message))
        else:
            print("\t[WARNING %s]: %s" % (name, message), file=sys.stderr)
    if errors:
        lines = ["[preflight] Some fatal errors occurred:"]
        lines += ["\t[ERROR %s]: %s" % e for e in errors]
        lines.append(
            "[preflight] If you know what you are doing, you can make a check non-fatal with "
            "`--ignore-preflight-errors=...`"
        )
        raise KubeadmExit(2, "\n".join(lines))

    host, port = server_hostport(endpoint)
    print('[discovery] Trying to connect to API Server "%s"' % endpoint)
    deadline = time.time() + float(os.environ.get("STANDIN_KUBEADM_TIMEOUT", "60"))
    while True:
        try:
            conversation = Conversation(host, port)
            try:
                reply = conversation.ask({"op": "join", "token": token})
            finally:
                conversation.close()
            break
        except ApiError:
            raise KubeadmExit(
                1,
                '[discovery] Failed to connect to API Server "%s": token id "%s" is '
                'invalid for this cluster or it has expired. Use "kubeadm token '
                'create" on the master node to creating a new valid token'
                % (endpoint, token.split(".")[0]),
            )
        except (OSError, ValueError) as exc:
            if time.time() > deadline:
                raise KubeadmExit(
                    1,
                    "[discovery] Failed to request cluster info, will try again: "
                    "[Get https://%s/api/v1/namespaces/kube-public/configmaps/"
                    "cluster-info: %s]" % (endpoint, exc),
                )
            time.sleep(1)
    ca = reply["ca"]
    actual = "sha256:" + hashlib.sha256(ca.encode()).hexdigest()
    if hashes and actual not in hashes:
        raise KubeadmExit(
            1,
            '[discovery] Failed to connect to API Server "%s": cluster CA found in '
            "cluster-info configmap does not match the provided hash (%s)" % (endpoint, actual),
        )
    print(
        "[discovery] Cluster info signature and contents are valid and TLS certificate validates "
        'against pinned roots, will use API Server "%s"' % endpoint
    )
    print('[discovery] Successfully established connection with API Server "%s"' % endpoint)
    config = reply.get("kubeadm-config") or {}
    kubeadm_args = (
        ["--container-runtime=remote", "--container-runtime-endpoint=%s" % crisocket]
        if crisocket != DOCKERSHIM_SOCKET
        else ["--cgroup-driver=cgroupfs", "--network-plugin=cni"]
    )
    if node != hostname():
        kubeadm_args.append("--hostname-override=%s" % node)
    print('[kubelet] Writing kubelet configuration to file "%s"' % KUBELET_CONFIG)
    atomic_write(KUBELET_CONFIG, kubelet_config_yaml(config.get("serviceSubnet") or "10.96.0.0/12"))
    print('[kubelet] Writing kubelet environment file with flags to file "%s"' % KUBEADM_FLAGS_ENV)
    atomic_write(KUBEADM_FLAGS_ENV, "KUBELET_KUBEADM_ARGS=%s\n" % " ".join(kubeadm_args))
    atomic_write(PKI + "/ca.crt", ca)
    # (the TLS bootstrap, in short: the kubelet gets its kubeconfig at once)
    atomic_write(
        K8S_DIR + "/kubelet.conf",
        kubeconfig("https://%s:%d" % (host, port), "system:node:" + node, ca),
        0o600,
    )
    atomic_write(REMOTE_MARKER, "%s:%d\n" % (host, port))
    print("[preflight] Activating the kubelet service")
    subprocess.run(["systemctl", "restart", "kubelet"])
    print("[tlsbootstrap] Waiting for the kubelet to perform the TLS Bootstrap...")
    while node not in read_state()["nodes"]:
        if time.time() > deadline + 60:
            raise KubeadmExit(1, "error uploading crisocket: timed out waiting for the condition")
        time.sleep(1)
    print(
        '[patchnode] Uploading the CRI Socket information "%s" to the Node API object "%s" as an '
        "annotation" % (crisocket, node)
    )
    print(
        "\nThis node has joined the cluster:\n* Certificate signing request was sent to apiserver "
        "and a response was received.\n* The Kubelet was informed of the new secure connection "
        "details.\n\nRun 'kubectl get nodes' on the master to see this node join the cluster.\n"
    )
    return 0


def kubeadm_leave(args):
    """`kubeadm reset` on a joined host: the local reset, and its node leaves the cluster."""
    endpoint = remote_endpoint()
    marker = open(REMOTE_MARKER).read()
    os.unlink(REMOTE_MARKER)  # from here on State() is this host's own (which reset wipes)
    code = _single_host_kubeadm_main(["reset"] + list(args))
    if code != 0:
        atomic_write(REMOTE_MARKER, marker)
        return code
    node = hostname()
    try:
        with RemoteState(endpoint) as state:
            state["nodes"].pop(node, None)
            state["heartbeats"].pop(node, None)
    except (OSError, ValueError, ApiError) as exc:
        print(
            "[reset] WARNING: node %s could not be removed from the cluster: %s" % (node, exc),
            file=sys.stderr,
        )
    return 0


_single_host_kubeadm_main = kubeadm_main


def kubeadm_main(args):
    command = args[0] if args else ""
    if command == "join" or (command == "reset" and remote_endpoint()):
        try:
            return kubeadm_join(args[1:]) if command == "join" else kubeadm_leave(args[1:])
        except FlagError as exc:
            print("Error: %s" % exc, file=sys.stderr)
            return 1
        except KubeadmExit as exc:
            if exc.message:
                print(exc.message, file=sys.stderr)
            return exc.code
    return _single_host_kubeadm_main(args)


# -------------------------------------------------------------------------- kubectl

_single_host_kubectl_main = kubectl_main


def kubectl_main(args):
    """As the single-host one; the master being away is a message, not a traceback."""
    try:
        return _single_host_kubectl_main(args)
    except (OSError, ValueError, ApiError) as exc:
        print("Unable to connect to the server: %s" % exc, file=sys.stderr)
        return 1


# The stand-ins pick their main function when they run (`if __name__ ...` below
# this fragment), by name; older ones kept a MAINS table.
if "MAINS" in globals():
    MAINS.update(kubeadm=kubeadm_main, kubectl=kubectl_main)
