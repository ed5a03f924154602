"""The command line: defaults, and a clear refusal of settings the operator cannot run with
(before it binds a port or talks to the apiserver)."""

from __future__ import annotations

import pytest

from metamapper_operator.__main__ import kopf_settings, lease_settings, parse_args
from metamapper_operator.config import Config


def test_defaults() -> None:
    args = parse_args([])
    assert (args.liveness_port, args.metrics_port) == (8080, 9090)
    assert (args.poll_interval, args.resync_interval, args.lease) == (2.0, 60.0, None)
    assert args.namespace == []


def refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_the_same_port_twice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    err = refusal(["--liveness-port", "9100", "--metrics-port", "9100"], capsys)
    assert "--liveness-port and --metrics-port must differ (both 9100)" in err


def test_metrics_off_may_leave_its_port_equal() -> None:
    assert parse_args(["--liveness-port", "0", "--metrics-port", "0"]).metrics_port == 0


@pytest.mark.parametrize(("argv", "says"), [
    (["--poll-interval", "0"], "--poll-interval must be at least 1 (seconds)"),
    (["--poll-interval", "0.01"], "--poll-interval must be at least 1 (seconds)"),
    (["--resync-interval", "-1"], "--resync-interval must be positive"),
    (["--lease-duration", "2"], "--lease-duration at least 3"),
    (["--lease", "just-a-name"], "--lease takes NAMESPACE/NAME"),
])
def test_unusable_settings_are_refused(argv: list[str], says: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert says in refusal(argv, capsys)


@pytest.mark.parametrize("duration", ["3", "15", "60", "600"])
def test_kopfs_requests_end_within_the_fencing_margin(duration: str) -> None:
    """kopf patches the Metamappers and posts events with a client of its own, past the
    leader's guard: its timeout must let a request started just before the watchdog ends
    the process finish before a standby may act."""
    lease = lease_settings(parse_args(["--lease", "ops/mmo", "--lease-duration", duration]),
                           "a")
    timeout = kopf_settings(lease).networking.request_timeout
    assert timeout is not None and timeout > 0
    assert lease.renew_deadline + lease.watchdog_period + timeout <= lease.duration
    assert kopf_settings(lease).watching.chunk_size == 500


def test_without_leader_election_kopf_keeps_a_long_timeout() -> None:
    assert kopf_settings(None).networking.request_timeout == 60


@pytest.mark.parametrize("poll", ["0.5", "0", "nan"])
def test_the_environment_cannot_set_a_polling_interval_below_one_second(poll: str) -> None:
    with pytest.raises(ValueError, match="METAMAPPER_POLL_SECONDS must be at least 1"):
        Config.from_env({"METAMAPPER_POLL_SECONDS": poll})
    assert Config.from_env({"METAMAPPER_POLL_SECONDS": "1"}).poll_seconds == 1


def test_the_operators_own_namespace_comes_from_the_downward_api() -> None:
    assert Config.from_env({"POD_NAMESPACE": "metamapper-system"}).home_namespace == (
        "metamapper-system")
    assert Config.from_env({}).home_namespace is None
