# ruff: noqa
# (a fragment of the kata stand-in programs, in their style: it uses their names, see below)
# TEST STAND-IN, not Kubernetes: the multi-node part of the kubeadm, kubelet
# and kubectl stand-ins of the kata profile (standins/kube131.py), as
# multinode/standin_multinode.py is for the frakti stand-ins (whose names it
# cannot use: kube131.py's differ). katalab.build_kata_mirror(kube_patch=...)
# inserts this file into each rendered program, just before its `if __name__`
# line, for test_kata_multinode.py only; names it uses (State, read_state,
# Kubelet, kubeadm_main, preflight, ...) are kube131.py's and common.py's, and
# what it defines here replaces them. kube131.py itself is not changed.
#
# The "cluster" stays on the master, /var/lib/standin-k8s/cluster.json; a
# joined host reaches it through the master's stand-in kube-apiserver on
# 6443: the listener sends its banner line as before (all the single-host
# stand-ins look for) and then answers requests, one JSON line each:
#
#   {"op": "read"}                  -> {"state": {...}}
#   {"op": "lock"}                  -> {"state": {...}}, locked for this connection
#   {"op": "write", "state": {...}} -> {"ok": true}      until written
#   {"op": "join", "token": T}      -> {"ca": PEM, "kubeadm-config": {...}} or {"error": ...}
#
# Added on top:
# - `kubeadm join --config=FILE` (a v1beta3/v1beta4 JoinConfiguration:
#   discovery.bootstrapToken.{token,apiServerEndpoint,caCertHashes},
#   nodeRegistration.{name,criSocket}) or the same as flags: the join preflight
#   of current kubeadm (JoinNodeChecks: kubelet.conf, bootstrap-kubelet.conf and
#   ca.crt must not exist, the common checks with Port-10250; no NumCPU, no
#   control-plane ports), the token (one `kubeadm token create` made) and the
#   CA hash checked with the master; then what join writes on a worker
#   (pki/ca.crt, kubelet.conf, /var/lib/kubelet/config.yaml, kubeadm-flags.env
#   with the CRI socket), the master remembered in /var/lib/standin-k8s/remote,
#   `systemctl restart kubelet`, the wait for the node to register. Each join is
#   logged as one JSON line in /var/log/standin-kubeadm-join.log (the token
#   hidden). A joined host's State() and read_state() then go to the master;
#   `kubeadm reset` there removes its node from the cluster instead of wiping it.
# - the controller-manager's node IPAM: a node registered through the API
#   without a podCIDR gets the next free /24 of the cluster's pod subnet (the
#   master's own node gets the first, as before).

REMOTE_MARKER = STATE_DIR + "/remote"  # "HOST:PORT" of the master's API, on a joined host
JOIN_LOG = "/var/log/standin-kubeadm-join.log"
BOOTSTRAP_KUBELET_CONF = K8S_DIR + "/bootstrap-kubelet.conf"
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
        if not self.file.readline().startswith(b"kube-apiserver stand-in"):
            self.close()
            raise OSError(f"{host}:{port} is not the stand-in kube-apiserver")

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
    used = [
        ipaddress.ip_network(n["spec"]["podCIDR"], strict=False)
        for n in state["nodes"].values()
        if (n.get("spec") or {}).get("podCIDR")
    ]
    for name in sorted(state["nodes"]):
        spec = state["nodes"][name].setdefault("spec", {})
        if spec.get("podCIDR"):
            continue
        for candidate in ipaddress.ip_network(subnet, strict=False).subnets(new_prefix=24):
            if not any(candidate.overlaps(u) for u in used):
                spec["podCIDR"], spec["podCIDRs"] = str(candidate), [str(candidate)]
                used.append(candidate)
                glog("I", f'"Set node PodCIDR" node="{name}" podCIDRs=["{candidate}"]')
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
                if request.get("token") not in state.get("bootstrap_tokens", []):
                    reply = {"error": "token is invalid for this cluster or it has expired"}
                else:
                    reply = {
                        "ca": read_text(PKI + "/ca.crt"),
                        "kubeadm-config": state["configmaps"].get("kubeadm-config", {}),
                    }
            else:
                reply = {"error": f"stand-in API server: bad request {op!r}"}
            stream.write(json.dumps(reply).encode() + b"\n")
            stream.flush()
    except (OSError, ValueError):
        pass
    finally:
        if held is not None:
            held.__exit__(RuntimeError, None, None)  # unlock without writing
        conn.close()


_single_host_serve = Kubelet._serve


def _serve(sock, reply):
    if reply != APISERVER_BANNER + b"\n":
        return _single_host_serve(sock, reply)

    def accept():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:  # the static pod was removed: its listener closed
                return
            threading.Thread(target=serve_api, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return None


Kubelet._serve = staticmethod(_serve)
_single_host_sync_node = Kubelet.sync_node


def _sync_node(self):
    try:
        _single_host_sync_node(self)
    except (OSError, ValueError, ApiError) as exc:  # the master is away: try again later
        glog("E", f'"Error updating node status, will retry" err="{exc}"')


Kubelet.sync_node = _sync_node


# -------------------------------------------------------------------------- kubeadm join / reset

JOIN_FLAGS = {
    "apiserver-advertise-address": "str",
    "apiserver-bind-port": "int",
    "certificate-key": "str",
    "config": "str",
    "control-plane": "bool",
    "cri-socket": "str",
    "discovery-file": "str",
    "discovery-token": "str",
    "discovery-token-ca-cert-hash": "list",
    "discovery-token-unsafe-skip-ca-verification": "bool",
    "dry-run": "bool",
    "ignore-preflight-errors": "list",
    "node-name": "str",
    "patches": "str",
    "skip-phases": "list",
    "tls-bootstrap-token": "str",
    "token": "str",
    "v": "int",
    "rootfs": "str",
}
CONTROL_PLANE_ONLY = ("NumCPU", "KubernetesVersion", "DirAvailable--var-lib-etcd")


def join_preflight(opts, endpoint):
    """kube131's init preflight less the control-plane checks, plus join's own."""
    failed = [
        f
        for f in preflight(opts, minor_of(VERSION), endpoint)
        if f[0] not in CONTROL_PLANE_ONLY
        and not f[0].startswith("FileAvailable--etc-kubernetes-manifests")
        and not (f[0].startswith("Port-") and f[0] != "Port-10250")
    ]
    for path in (K8S_DIR + "/kubelet.conf", BOOTSTRAP_KUBELET_CONF, PKI + "/ca.crt"):
        if os.path.exists(path):
            failed.append(
                ("FileAvailable-" + path.replace("/", "-"), "ERROR", f"{path} already exists")
            )
    return failed


def kubeadm_join(args):
    opts, positionals = parse_flags(args, JOIN_FLAGS)
    schema = None
    if "config" in opts:
        if positionals:
            raise KubeadmExit(1, f"can not mix '--config' with arguments {positionals}")
        flags, error = kubeadm_config_flags(opts["config"], CONFIG_SCHEMAS, opts, WITH_CONFIG)
        if error:
            raise KubeadmExit(1, error)
        schema = read_yaml_documents(opts["config"])[0].get("apiVersion")
        opts = dict({k: v for k, v in opts.items() if k != "config"}, **flags)
        positionals = [opts.pop("api-server")] if "api-server" in opts else []
    if len(positionals) != 1:
        raise KubeadmExit(
            1,
            'discovery.bootstrapToken.apiServerEndpoint: Invalid value: "": the API server '
            "endpoint (HOST:PORT) is required",
        )
    api_server = positionals[0]
    token = opts.get("token") or opts.get("discovery-token") or ""
    if not re.match(r"^[a-z0-9]{6}\.[a-z0-9]{16}$", token):
        raise KubeadmExit(
            1,
            f'discovery.bootstrapToken.token: Invalid value: "{token[:6]}...": the bootstrap '
            "token is invalid"
            if token
            else 'discovery.bootstrapToken.token: Invalid value: "": the bootstrap token is invalid',
        )
    hashes = opts.get("discovery-token-ca-cert-hash", [])
    if not hashes and not opts.get("discovery-token-unsafe-skip-ca-verification"):
        raise KubeadmExit(
            1,
            'discovery.bootstrapToken.caCertHashes: Invalid value: "": using token-based '
            "discovery without caCertHashes can be unsafe. Set unsafeSkipCAVerification as "
            "true in your kubeadm config file or pass --discovery-token-unsafe-skip-ca-"
            "verification flag to continue",
        )
    endpoint = opts.get("cri-socket", DEFAULT_ENDPOINT)
    if not endpoint.startswith("unix://"):
        endpoint = "unix://" + endpoint
    node = (opts.get("node-name") or hostname()).lower()
    with open(JOIN_LOG, "a") as fh:
        hidden = [re.sub(r"[a-z0-9]{6}\.[a-z0-9]{16}", "<hidden>", a) for a in args]
        record = {
            "time": now_iso(),
            "argv": hidden,
            "config_api_version": schema,
            "api_server": api_server,
            "cri_socket": endpoint,
            "node_name": node,
        }
        fh.write(json.dumps(record) + "\n")

    print("[preflight] Running pre-flight checks")
    ignored = {i.lower() for i in opts.get("ignore-preflight-errors", [])}
    errors = []
    for name, level, message in join_preflight(opts, endpoint):
        if level == "ERROR" and "all" not in ignored and name.lower() not in ignored:
            errors.append((name, message))
        else:
            print(f"\t[WARNING {name}]: {message}", file=sys.stderr)
    if errors:
        lines = ["error execution phase preflight: [preflight] Some fatal errors occurred:"]
        lines += ["\t[ERROR {}]: {}".format(*e) for e in errors]
        lines.append(
            "[preflight] If you know what you are doing, you can make a check "
            "non-fatal with `--ignore-preflight-errors=...`"
        )
        raise KubeadmExit(1, "\n".join(lines))

    host, port = server_hostport(api_server)
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
                "error execution phase preflight: couldn't validate the identity of the API "
                f"Server: could not find a JWS signature in the cluster-info ConfigMap for token "
                f'ID "{token.split(".")[0]}"',
            ) from None
        except (OSError, ValueError) as exc:
            if time.time() > deadline:
                raise KubeadmExit(
                    1,
                    "error execution phase preflight: couldn't validate the identity of the "
                    f'API Server: Get "https://{api_server}/api/v1/namespaces/kube-public/'
                    f'configmaps/cluster-info?timeout=10s": {exc}',
                ) from None
            time.sleep(1)
    ca = reply["ca"]
    actual = "sha256:" + hashlib.sha256(ca.encode()).hexdigest()
    if hashes and actual not in hashes:
        raise KubeadmExit(
            1,
            "error execution phase preflight: couldn't validate the identity of the API Server: "
            f"cluster CA found in cluster-info ConfigMap is invalid: none of the public keys "
            f'"{actual}" are pinned',
        )
    print(
        '[preflight] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...'
    )
    config = reply.get("kubeadm-config") or {}
    service_cidr = config.get("serviceSubnet") or "10.96.0.0/12"
    dns = str(ipaddress.ip_network(service_cidr, strict=False).network_address + 10)
    print(f'[kubelet-start] Writing kubelet configuration to file "{KUBELET_CONFIG}"')
    atomic_write(KUBELET_CONFIG, KUBELET_CONFIG_YAML.format(dns=dns))
    print(
        f'[kubelet-start] Writing kubelet environment file with flags to file "{KUBEADM_FLAGS_ENV}"'
    )
    kubeadm_args = [
        f"--container-runtime-endpoint={endpoint}",
        f"--pod-infra-container-image={PAUSE_IMAGE}",
    ]
    if node != hostname():
        kubeadm_args.append(f"--hostname-override={node}")
    atomic_write(KUBEADM_FLAGS_ENV, 'KUBELET_KUBEADM_ARGS="{}"\n'.format(" ".join(kubeadm_args)))
    atomic_write(PKI + "/ca.crt", ca)
    # (the TLS bootstrap, in short: the kubelet gets its kubeconfig at once)
    atomic_write(
        K8S_DIR + "/kubelet.conf",
        kubeconfig(f"https://{host}:{port}", "system:node:" + node, ca),
        0o600,
    )
    atomic_write(REMOTE_MARKER, f"{host}:{port}\n")
    print("[kubelet-start] Starting the kubelet")
    subprocess.run(["systemctl", "restart", "kubelet"])
    print("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap")
    while node not in read_state()["nodes"]:
        if time.time() > deadline + 60:
            raise KubeadmExit(
                1,
                "error execution phase kubelet-start: timed out waiting for the condition",
            )
        time.sleep(1)
    print(
        "\nThis node has joined the cluster:\n* Certificate signing request was sent to apiserver "
        "and a response was received.\n* The Kubelet was informed of the new secure connection "
        "details.\n\nRun 'kubectl get nodes' on the control-plane to see this node join the cluster.\n"
    )
    return 0


def kubeadm_leave(args):
    """`kubeadm reset` on a joined host: the local reset, and its node leaves the cluster."""
    endpoint = remote_endpoint()
    marker = read_text(REMOTE_MARKER)
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
            f"[reset] WARNING: node {node} could not be removed from the cluster: {exc}",
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
            print(
                f"{exc}\nTo see the stack trace of this error execute with --v=5 or higher",
                file=sys.stderr,
            )
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
        print(f"Unable to connect to the server: {exc}", file=sys.stderr)
        return 1
