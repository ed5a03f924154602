"""The operator-wide settings: what the command line (or the environment) decides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The shortest polling interval a user may set: every broker is measured once per interval.
MIN_POLL_SECONDS = 1.0


@dataclass(frozen=True, kw_only=True)
class Config:
    """Operator-wide settings, from the command line."""

    resync_seconds: float = 60.0
    """Every object is reconciled again this often (repairs drift nobody announced)."""
    poll_seconds: float = 2.0
    """How often the autoscaler measures every broker: a burst waits up to this long to be
    seen (the README's "Why 2 s")."""
    secret_ttl_seconds: float = 300.0
    """How long a Secret read is reused before it is read again."""
    cycle_limit_seconds: float = 30.0
    """The longest one autoscaling cycle may take (at least one polling interval)."""
    namespaces: tuple[str, ...] = ()
    """The namespaces watched; all of them when empty."""
    identity: str = "metamapper-operator"
    home_namespace: str | None = None
    """The operator's own namespace (``POD_NAMESPACE``, from the downward API); None when
    it runs outside a cluster. A fleet here reaches a broker's short name as the operator
    does, so its URL is dialled as written (``references.resolve``)."""
    """This process, as named in its requests' User-Agent and as a Lease holder."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """Settings from METAMAPPER_* variables (the command line sets them)."""
        defaults = cls()
        poll = float(env.get("METAMAPPER_POLL_SECONDS", defaults.poll_seconds))
        if not poll >= MIN_POLL_SECONDS:
            raise ValueError(f"METAMAPPER_POLL_SECONDS must be at least {MIN_POLL_SECONDS:g}")
        return cls(
            resync_seconds=float(env.get("METAMAPPER_RESYNC_SECONDS", defaults.resync_seconds)),
            poll_seconds=poll,
            secret_ttl_seconds=float(env.get("METAMAPPER_SECRET_TTL_SECONDS",
                                             defaults.secret_ttl_seconds)),
            home_namespace=env.get("POD_NAMESPACE") or None,
        )
