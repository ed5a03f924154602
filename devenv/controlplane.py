"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, from binaries built out of the published Go modules by ``tools/build.sh``.

Everything an operator talks to is the real thing: Node and RBAC authorization, admission
(PodSecurity and NodeRestriction included), service-account tokens, CRD validation with
OpenAPI schemas, defaults and CEL, the status and scale subresources, and the controllers
that turn Deployments into ReplicaSets and Pods and garbage-collect owned objects. The
apiserver listens on the development environment's own host address (``devenv.network``),
so pods reach it through the ``kubernetes`` Service. ``devenv.node`` adds a real node.

``python -m devenv.controlplane up|down|status [--dir DIR]``
"""

from __future__ import annotations

import argparse
import base64
import datetime
import errno
import ipaddress
import json
import os
import random
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from devenv import network
from devenv.errors import DevenvError
from devenv.processes import alive, stop_groups
from devenv.waiting import WaitTimeout, wait_until
from metamapper_operator import crd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = Path.home() / ".cache" / "metamapper-operator" / "cluster"
# Every request's metadata (who, what, which object) goes to audit.log: tests read it to
# count the API writes a component made.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "None", "nonResourceURLs": ["/healthz*", "/readyz*", "/livez*"]},
              {"level": "Metadata"}],
}


class ControlPlaneError(DevenvError):
    """The control plane could not be started; the message says why."""


def _built_dirs() -> list[Path]:
    """The cache folders ``tools/build.sh`` prints: the Kubernetes binaries, helm and
    CoreDNS, built if missing.

    ``tools/build.sh`` owns the cache layout; it returns at once when nothing is missing.
    """
    result = subprocess.run(["bash", str(REPO / "tools/build.sh")], stdout=subprocess.PIPE,
                            text=True, check=False)
    if result.returncode:
        raise ControlPlaneError("tools/build.sh failed (see above): Go >= 1.25 is needed")
    return [Path(line) for line in result.stdout.split()]


def tool_dirs() -> tuple[Path, Path]:
    """The cache folders holding the Kubernetes binaries and helm, built if missing."""
    kube, helm, _ = _built_dirs()
    return kube, helm


def coredns_binary() -> Path:
    """CoreDNS (the cluster DNS, ``devenv.dns``), built if missing."""
    return _built_dirs()[2] / "coredns"


#: Where :func:`free_port` looks: below Linux's ephemeral range (32768-60999), whose ports
#: the kernel hands to outgoing connections at any time, so a port found free there can be
#: taken by a client before the daemon meant to listen on it binds; and below 30000, where
#: Kubernetes's NodePorts start.
FREE_PORTS = range(20000, 30000)
#: ``METAMAPPER_PORT_SHARE=i/n``: the process looks for ports in the i-th (from 0) of n equal
#: slices of ``FREE_PORTS`` only. A port is free when it is looked for, and each process
#: remembers only what it handed out itself, so two processes that start daemons at the
#: same time (the suite's workers under ``TEST_WORKERS``) are given shares of their own.
PORT_SHARE = "METAMAPPER_PORT_SHARE"
_handed_out: set[int] = set()


def port_range() -> range:
    """Where :func:`free_port` looks: ``FREE_PORTS``, or this process's share of it."""
    share = os.environ.get(PORT_SHARE)
    if not share:
        return FREE_PORTS
    index, _, count = share.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ControlPlaneError(f"{PORT_SHARE}={share!r} names no share: it takes i/n, "
                                "with 0 <= i < n")
    size = len(FREE_PORTS) // int(count)
    return FREE_PORTS[int(index) * size:(int(index) + 1) * size]


def free_port() -> int:
    """A TCP port free on loopback and on the host address (the daemons use both), never
    one this process has handed out before (two daemons started together must not share),
    from this process's share of the range if it has one (:data:`PORT_SHARE`).

    The host address is added first if it is missing (as on a fresh machine, before any
    daemon has started): a bind to an address the machine does not have fails for every
    port, so only "address in use" means "try another"; any other error is raised.
    """
    _ensure_host_address_once()
    ports = port_range()
    while True:
        port = random.choice(ports)
        if port in _handed_out:
            continue
        try:
            for host in ("127.0.0.1", network.HOST_IP):
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                continue
            raise ControlPlaneError(f"cannot look for a free port: binding {host}:{port} "
                                    f"failed: {error.strerror}") from error
        _handed_out.add(port)
        return port


_host_address_checked = False


def _ensure_host_address_once() -> None:
    global _host_address_checked
    if not _host_address_checked:
        network.ensure_host_address()
        _host_address_checked = True


# --- certificates ------------------------------------------------------------------


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: x509.Name, key: rsa.RSAPrivateKey, issuer: x509.Name | None = None,
          issuer_key: rsa.RSAPrivateKey | None = None, *, ca: bool = False,
          sans: Sequence[x509.GeneralName] = ()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _name(common: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


NODE_NAME = "metamapper-node"
# The client certificates of the cluster's components: file stem -> (user, group). The
# apiserver's default RBAC bindings and the Node authorizer know these names.
CLIENTS = {
    "admin": ("admin", "system:masters"),
    "scheduler": ("system:kube-scheduler", None),
    "node": (f"system:node:{NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", None),
}


def write_pki(pki: Path) -> None:
    """A CA, the apiserver's serving cert, the components' client certs, the SA key."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key, ca_name = _key(), _name("metamapper-local-ca")
    ca = _cert(ca_name, ca_key, ca=True)
    serving_key = _key()
    serving = _cert(_name("kube-apiserver"), serving_key, ca_name, ca_key, sans=[
        x509.DNSName("localhost"), x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address(network.HOST_IP)),
        x509.IPAddress(ipaddress.ip_address(network.KUBERNETES_SERVICE_IP)),
    ])
    sa_key = _key()
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM), "ca.key": _pem_key(ca_key),
        "apiserver.crt": serving.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": _pem_key(serving_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    for stem, (user, group) in CLIENTS.items():
        key = _key()
        files[f"{stem}.crt"] = _cert(_name(user, group), key, ca_name, ca_key).public_bytes(
            serialization.Encoding.PEM)
        files[f"{stem}.key"] = _pem_key(key)
    for name, data in files.items():
        (pki / name).write_bytes(data)
        (pki / name).chmod(0o600)


def kubeconfig(server: str, pki: Path, user: str = "admin") -> dict[str, object]:
    """A kubeconfig for ``server`` with the client certificate ``<pki>/<user>.crt``."""
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "metamapper-local",
        "clusters": [{"name": "metamapper-local", "cluster": {
            "server": server, "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(f"{user}.crt"),
            "client-key-data": b64(f"{user}.key")}}],
        "contexts": [{"name": "metamapper-local", "context": {
            "cluster": "metamapper-local", "user": user, "namespace": "default"}}],
    }


# --- processes ---------------------------------------------------------------------


@dataclass
class ControlPlane:
    """The control plane's four processes, their ports and state, under one folder ``root``."""

    root: Path
    etcd_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    apiserver_port: int = field(default_factory=free_port)
    kcm_port: int = field(default_factory=free_port)
    scheduler_port: int = field(default_factory=free_port)
    pids: dict[str, int] = field(default_factory=dict)
    # Handles of the processes this Python process started, so stop() can reap them.
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def server(self) -> str:
        return f"https://{network.HOST_IP}:{self.apiserver_port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self.root / "kubeconfig"

    def component_kubeconfig(self, user: str) -> Path:
        """A kubeconfig of its own for a component (``scheduler``, ``node``, ...), written
        anew: every start has new certificates and a new apiserver port."""
        path = self.root / f"{user}.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(self.server, self.pki, user)))
        path.chmod(0o600)
        return path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.root / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._procs.append(proc)
        self.pids[name] = proc.pid
        self._save()

    def _save(self) -> None:
        state = {"pids": self.pids, "server": self.server, "ports": {
            "etcd": self.etcd_port, "peer": self.peer_port,
            "apiserver": self.apiserver_port, "kcm": self.kcm_port,
            "scheduler": self.scheduler_port}}
        (self.root / "state.json").write_text(json.dumps(state, indent=2))

    def _healthy(self, url: str, *, client_cert: bool) -> bool:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if client_cert:
            context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _wait(self, name: str, url: str, timeout: float, *, client_cert: bool = True) -> None:
        try:
            wait_until(lambda: self._healthy(url, client_cert=client_cert), timeout, name,
                       interval=0.25, abort=lambda: not alive(self.pids[name]))
        except WaitTimeout:
            log = self.root / f"{name}.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            self.stop()
            raise ControlPlaneError(f"{name} did not become healthy; log tail:\n{tail}") from None

    def start(self, progress: bool = False) -> None:
        def say(message: str) -> None:
            if progress:
                print(message, flush=True)

        kube, _ = tool_dirs()
        network.ensure_host_address()
        self.root.mkdir(parents=True, exist_ok=True)
        write_pki(self.pki)
        self.kubeconfig_path.write_text(yaml.safe_dump(kubeconfig(self.server, self.pki)))
        self.kubeconfig_path.chmod(0o600)
        (self.root / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        say("starting etcd ...")
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn("etcd", [
            str(kube / "etcd"), "--name", "local", "--data-dir", str(self.root / "etcd"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"local={peer}", "--unsafe-no-fsync",
            "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
        ])
        say("starting kube-apiserver ...")
        pki = self.pki
        self._spawn("kube-apiserver", [
            str(kube / "kube-apiserver"), f"--etcd-servers={client}",
            f"--bind-address={network.HOST_IP}", f"--advertise-address={network.HOST_IP}",
            f"--secure-port={self.apiserver_port}", f"--cert-dir={self.root / 'serving'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={network.SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # The apiserver's identity towards the kubelet (logs, exec, port-forward).
            f"--kubelet-client-certificate={pki / 'admin.crt'}",
            f"--kubelet-client-key={pki / 'admin.key'}",
            "--kubelet-preferred-address-types=InternalIP",   # the node's name is not in DNS
            "--profiling=false",
            f"--audit-policy-file={self.root / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}", "--audit-log-maxsize=200",
            "--audit-log-maxbackup=1",
        ])
        self._wait("kube-apiserver", f"{self.server}/readyz", 90)
        say("starting kube-controller-manager ...")
        self._spawn("kube-controller-manager", [
            str(kube / "kube-controller-manager"), f"--kubeconfig={self.kubeconfig_path}",
            f"--authentication-kubeconfig={self.kubeconfig_path}",
            f"--authorization-kubeconfig={self.kubeconfig_path}",
            "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={self.kcm_port}", f"--cert-dir={self.root / 'kcm-serving'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}", "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--controllers=*", "--concurrent-gc-syncs=5",
            # Its own client's default (20 requests/s) makes thousands of Deployments take
            # many minutes to get their ReplicaSets; the apiserver here has room for more.
            "--kube-api-qps=200", "--kube-api-burst=400",
        ])
        self._wait("kube-controller-manager", f"https://127.0.0.1:{self.kcm_port}/healthz", 60,
                   client_cert=False)
        say("starting kube-scheduler ...")
        scheduler = self.component_kubeconfig("scheduler")
        self._spawn("kube-scheduler", [
            str(kube / "kube-scheduler"), f"--kubeconfig={scheduler}",
            f"--authentication-kubeconfig={scheduler}",
            f"--authorization-kubeconfig={scheduler}",
            "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={self.scheduler_port}",
        ])
        self._wait("kube-scheduler", f"https://127.0.0.1:{self.scheduler_port}/healthz", 60,
                   client_cert=False)
        say(f"control plane ready at {self.server}")

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL what is left after 10 s."""
        stop_groups(self.pids.values(), grace=10)
        for proc in self._procs:
            proc.wait()
        self._procs.clear()
        self.pids.clear()
        self._save()

    @classmethod
    def load(cls, root: Path) -> ControlPlane:
        state = json.loads((root / "state.json").read_text())
        ports = state["ports"]
        return cls(root, ports["etcd"], ports["peer"], ports["apiserver"], ports["kcm"],
                   ports["scheduler"], {k: int(v) for k, v in state["pids"].items()})


def install_crds(plane: ControlPlane, kubectl: Path, timeout: float = 60) -> None:
    """Apply the project's CRDs and wait until they are served, so that a Metamapper can
    be applied right after (``kubectl apply -f crds/ -f examples/...`` in one go)."""
    base = [str(kubectl), f"--kubeconfig={plane.kubeconfig_path}"]
    subprocess.run([*base, "apply", "--server-side", "-f", str(REPO / "crds")], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: subprocess.run([*base, "get", crd.PLURAL, "-A"], capture_output=True,
                                          check=False).returncode == 0,
                   timeout, "the Metamapper CRD served", interval=0.25)
    except WaitTimeout as err:
        raise ControlPlaneError(str(err)) from None


def wait_for_default_service_account(plane: ControlPlane, kubectl: Path,
                                     timeout: float = 60) -> None:
    """Until the controller-manager has made namespace default's ServiceAccount: a pod
    created before it is refused (``error looking up service account default/default``)."""
    base = [str(kubectl), f"--kubeconfig={plane.kubeconfig_path}"]
    try:
        wait_until(lambda: subprocess.run(
            [*base, "get", "serviceaccount", "default", "-n", "default"],
            capture_output=True, check=False).returncode == 0,
            timeout, "the default ServiceAccount created", interval=0.25)
    except WaitTimeout as err:
        raise ControlPlaneError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    from devenv.node import Node, NodeError, leftovers  # the node builds on this module

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state folder")
    parser.add_argument("--no-node", action="store_true",
                        help="the control plane alone (no kubelet, no containerd)")
    args = parser.parse_args(argv)
    root: Path = args.dir
    if args.action == "up":
        if (root / "state.json").exists():
            # Started again on its earlier state, on the same ports: the `kubernetes`
            # Service's endpoints in that state name the apiserver's port.
            plane = ControlPlane.load(root)
            node = Node.load(plane)
            if plane.pids and all(alive(p) for p in [*plane.pids.values(),
                                                      *node.pids.values()]):
                print(f"already running at {plane.server}")
                print(f"export KUBECONFIG={plane.kubeconfig_path}")
                return 0
            node.stop()
            plane.stop()
        else:
            plane = ControlPlane(root)
        try:
            plane.start(progress=True)
            if not args.no_node:
                Node(plane).start(progress=True)
        except (ControlPlaneError, NodeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        kube, helm = tool_dirs()
        install_crds(plane, kube / "kubectl")
        wait_for_default_service_account(plane, kube / "kubectl")
        print(f"\nexport KUBECONFIG={plane.kubeconfig_path}")
        print(f"export PATH={kube}:{helm}:$PATH   # kubectl and helm")
        return 0
    if not (root / "state.json").exists():
        print("not running")
        return 0
    plane = ControlPlane.load(root)
    node = Node.load(plane)
    if args.action == "down":
        node.stop()
        plane.stop()
        left = leftovers()
        if left:
            print("left behind:\n  " + "\n  ".join(left), file=sys.stderr)
            return 1
        print("stopped: no process, mount, network namespace, veth or bridge left")
        return 0
    for name, pid in [*plane.pids.items(), *node.pids.items()]:
        print(f"{name}: {'running' if alive(pid) else 'stopped'} (pid {pid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
