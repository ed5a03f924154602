"""Ports for the daemons the tests start: free now, and not one an outgoing connection or
another daemon of the same run can take before it is bound (a daemon once failed to bind its
liveness port, found free a moment before in the ephemeral range), nor one another process
of the same run hands out (the suite's workers under ``TEST_WORKERS``: each has its share)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from devenv import controlplane
from devenv.controlplane import FREE_PORTS, PORT_SHARE, ControlPlaneError, free_port, port_range
from tests.conftest import REPO


def test_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
        ephemeral_start = int(ranges.read().split()[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(port in port_range() and port in FREE_PORTS and port < ephemeral_start
               for port in ports)


def test_a_port_something_listens_on_is_not_handed_out() -> None:
    listeners = []
    for port in port_range()[:200]:   # where this process looks (its share, if it has one)
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.listen()
        listeners.append(sock)
    taken = {sock.getsockname()[1] for sock in listeners}
    try:
        assert taken
        assert not taken & {free_port() for _ in range(1000)}
    finally:
        for sock in listeners:
            sock.close()


def test_the_host_address_is_made_before_the_first_port_is_looked_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fresh machine the host address is missing until a daemon starts; the ports of the
    control plane are chosen before that, and looked for forever (a benchmark hung)."""
    calls: list[str] = []
    monkeypatch.setattr(controlplane, "_host_address_checked", False)
    monkeypatch.setattr(controlplane.network, "ensure_host_address",
                        lambda: calls.append("ensure"))
    free_port()
    free_port()
    assert calls == ["ensure"]


def test_an_address_the_machine_lacks_is_an_error_not_an_endless_search(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controlplane, "_host_address_checked", True)
    monkeypatch.setattr(controlplane.network, "HOST_IP", "198.51.100.7")  # TEST-NET-2
    with pytest.raises(ControlPlaneError, match=r"binding 198\.51\.100\.7:\d+ failed: "
                                                "Cannot assign requested address"):
        free_port()


def _ports_of(share: str, count: int) -> set[int]:
    """``count`` ports :func:`free_port` hands out in a process of its own with ``share``."""
    script = (f"from devenv.controlplane import free_port\n"
              f"print(*(free_port() for _ in range({count})))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, cwd=REPO, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO), PORT_SHARE: share})
    return {int(port) for port in done.stdout.split()}


def test_processes_with_different_shares_never_hand_out_the_same_port() -> None:
    """Each worker of the suite finds ports free on its own; two that looked in the same
    range would hand out the same one (300 each of 10,000: about nine in common)."""
    first, second = _ports_of("0/2", 300), _ports_of("1/2", 300)
    assert len(first) == len(second) == 300
    assert not first & second
    half = len(FREE_PORTS) // 2
    assert first <= set(FREE_PORTS[:half]) and second <= set(FREE_PORTS[half:])


@pytest.mark.parametrize("share", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_a_share_that_names_no_slice_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                                 share: str) -> None:
    monkeypatch.setenv(PORT_SHARE, share)
    with pytest.raises(ControlPlaneError, match=PORT_SHARE):
        port_range()
