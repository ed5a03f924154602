"""The node's container runtime: Debian's containerd and runc, in folders of their own.

One containerd serves the development environment (like the one on a real node): its
image store (``ROOT``) outlives a cluster, so images are loaded once; its state and socket
live under ``STATE``. ``ensure`` is idempotent (reuse or start), like the services.

Two settings follow from this machine (root in a VM): cgroups are v1 (the ``cgroupfs``
driver, no systemd), and root lacks ``CAP_SYS_RESOURCE``, so a negative
``oom_score_adj`` cannot be set: ``restrict_oom_score_adj`` keeps runc from trying, which
otherwise fails every sandbox with ``can't get final child's PID from pipe: EOF``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from devenv.errors import DevenvError
from devenv.network import BRIDGE, POD_CIDR
from devenv.processes import alive, stop_groups
from devenv.waiting import WaitTimeout, wait_until

ROOT = Path("/var/lib/metamapper-containerd")
STATE = Path("/run/metamapper-containerd")
SOCKET = STATE / "containerd.sock"
ENDPOINT = f"unix://{SOCKET}"
NAMESPACE = "k8s.io"  # the CRI plugin's namespace: what the kubelet sees
CNI_BIN = Path("/usr/lib/cni")
HOME = Path("/var/tmp/metamapper-containerd")  # config, CNI config, log, pid
INSTALL_HINT = "`make deps` installs Debian's containerd, runc and containernetworking-plugins"


class ContainerdError(DevenvError):
    """containerd could not be started or refused a request; the message says why."""


def config(sandbox_image: str) -> str:
    return f"""version = 2
root = "{ROOT}"
state = "{STATE}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{SOCKET}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{HOME / 'net.d'}"
"""


def cni_config() -> str:
    """The pod network: one bridge, addresses from host-local IPAM, no masquerading (pods
    reach this machine's own addresses only)."""
    return f"""{{
  "cniVersion": "1.0.0",
  "name": "metamapper",
  "plugins": [
    {{"type": "bridge", "bridge": "{BRIDGE}", "isGateway": true, "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{POD_CIDR}"}}]],
               "routes": [{{"dst": "0.0.0.0/0"}}], "dataDir": "{HOME / 'ipam'}"}}}},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
"""


def _pid() -> int | None:
    pidfile = HOME / "pid"
    if pidfile.exists():
        pid = int(pidfile.read_text())
        if alive(pid):
            return pid
    return None


def ctr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("ctr")
    if binary is None:
        raise ContainerdError(f"ctr not found: {INSTALL_HINT}")
    done = subprocess.run([binary, "--address", str(SOCKET), "--namespace", NAMESPACE, *args],
                          capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise ContainerdError(f"`ctr {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def running() -> bool:
    return _pid() is not None and SOCKET.exists() and ctr("version", check=False).returncode == 0


def ensure(sandbox_image: str) -> None:
    """Start containerd unless it runs with this configuration (a changed sandbox image
    restarts it)."""
    wanted = config(sandbox_image)
    conf = HOME / "config.toml"
    if running() and conf.exists() and conf.read_text() == wanted:
        return
    stop()
    for tool, path in (("containerd", None), ("runc", None),
                       ("bridge CNI plugin", CNI_BIN / "bridge")):
        if (path is None and shutil.which(tool) is None) or (path and not path.exists()):
            raise ContainerdError(f"{tool} not found: {INSTALL_HINT}")
    (HOME / "net.d").mkdir(parents=True, exist_ok=True)
    (HOME / "net.d" / "10-metamapper.conflist").write_text(cni_config())
    conf.write_text(wanted)
    with (HOME / "log").open("ab") as log:
        proc = subprocess.Popen([str(shutil.which("containerd")), "--config", str(conf)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    pid = proc.pid
    (HOME / "pid").write_text(str(pid))
    try:
        wait_until(running, 30, "containerd", abort=lambda: not alive(pid))
    except WaitTimeout:
        tail = "\n".join((HOME / "log").read_text(errors="replace").splitlines()[-15:])
        raise ContainerdError(f"containerd did not start; log tail:\n{tail}") from None


def stop() -> None:
    """Stop containerd (its containers' shims are stopped by the kubelet before this)."""
    pid = _pid()
    if pid is not None:
        stop_groups([pid], grace=15)
    (HOME / "pid").unlink(missing_ok=True)


def has_image(name: str) -> bool:
    return bool(ctr("images", "ls", "-q", f"name=={name}", check=False).stdout.strip())


def import_image(archive: Path) -> None:
    ctr("images", "import", str(archive))


def image_size(name: str) -> str:
    """The image's size as containerd lists it (the content it stores)."""
    lines = ctr("images", "ls", f"name=={name}", check=False).stdout.splitlines()
    return " ".join(lines[1].split()[3:5]) if len(lines) > 1 else ""
