"""The command line: defaults, and a clear refusal of settings the operator cannot run with
(before it binds a port or talks to the apiserver)."""

from __future__ import annotations

import pytest

from metamapper_operator.__main__ import parse_args


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
    (["--poll-interval", "0"], "--poll-interval and --resync-interval must be positive"),
    (["--resync-interval", "-1"], "--poll-interval and --resync-interval must be positive"),
    (["--lease-duration", "2"], "--lease-duration at least 3"),
    (["--lease", "just-a-name"], "--lease takes NAMESPACE/NAME"),
])
def test_unusable_settings_are_refused(argv: list[str], says: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert says in refusal(argv, capsys)
