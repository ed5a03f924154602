"""The host address is added once, whoever adds it: two processes (the suite's workers on a
fresh machine, each before its first port or service) can both find it missing, and the
second's ``ip addr add`` then fails with "File exists"."""

from __future__ import annotations

import pytest

from devenv import network


def _missing_when_first_looked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first look finds no address, as a process does that looks just before another
    adds it; later looks see the machine as it is."""
    real, looked = network._has_host_address, []

    def has_host_address() -> bool:
        looked.append(True)
        return len(looked) > 1 and real()

    monkeypatch.setattr(network, "_has_host_address", has_host_address)


def test_an_address_another_process_added_meanwhile_is_no_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    network.ensure_host_address()   # there, as after the other process's add
    _missing_when_first_looked(monkeypatch)
    network.ensure_host_address()   # its own add fails: the address exists
    assert network._has_host_address()


def test_an_add_that_fails_for_another_reason_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "HOST_INTERFACE", "mm-no-such-if")
    monkeypatch.setattr(network, "_has_host_address", lambda: False)
    with pytest.raises(network.NetworkError,
                       match=r"`ip addr add \S+ dev mm-no-such-if` failed: .*mm-no-such-if"):
        network.ensure_host_address()
