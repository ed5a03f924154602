"""``metamapper-operator``: run the operator (kopf) with its settings from the command line.

With ``--lease`` (what the chart passes) the process first stands by until it holds the
Lease, and only then starts kopf, its handlers and the loops: a standby makes no write at
all. Losing the Lease ends the process (see :mod:`metamapper_operator.leader`), and kopf's
own requests (its annotations on the Metamappers, its events) take no longer than the
fencing margin allows (:func:`kopf_settings`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import kopf

from metamapper_operator import __version__, metrics_server
from metamapper_operator.config import MIN_POLL_SECONDS, Config
from metamapper_operator.health import Health
from metamapper_operator.kube import Kube
from metamapper_operator.leader import LeaseElector, LeaseSettings, identity

DEFAULTS = Config()
# kopf's requests without leader election; with it, the fencing margin's write budget.
KOPF_REQUEST_TIMEOUT = 60.0
# kopf lists the Metamappers in pages of this many, so each page fits a short timeout.
KOPF_LIST_CHUNK = 500


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="metamapper-operator",
        description="Runs Metamapper Celery fleets: reconciles Metamapper objects into worker "
                    "pools and a single-beat scheduler, and scales pools from queue depth.")
    parser.add_argument("--namespace", action="append", default=[], metavar="NS",
                        help="watch this namespace (repeatable); all namespaces when omitted")
    parser.add_argument("--liveness-port", type=int, default=8080,
                        help="port of the liveness endpoint /healthz (default 8080)")
    parser.add_argument("--metrics-port", type=int, default=9090,
                        help="port of the Prometheus endpoint /metrics; 0 turns it off")
    parser.add_argument("--lease", metavar="NAMESPACE/NAME",
                        help="act only while holding this coordination.k8s.io Lease (leader "
                             "election, for several replicas); always act when omitted")
    parser.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS",
                        help="how long a Lease not renewed stays with its holder (default 15); "
                             "the leader stops acting after 2/3 of it without a renewal")
    parser.add_argument("--poll-interval", type=float, default=DEFAULTS.poll_seconds,
                        metavar="SECONDS", help="how often every broker is measured "
                                                f"(default {DEFAULTS.poll_seconds:g})")
    parser.add_argument("--resync-interval", type=float, default=DEFAULTS.resync_seconds,
                        metavar="SECONDS", help="how often every object is fully reconciled "
                                                f"(default {DEFAULTS.resync_seconds:g})")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    if args.poll_interval < MIN_POLL_SECONDS:
        parser.error(f"--poll-interval must be at least {MIN_POLL_SECONDS:g} (seconds)")
    if args.resync_interval <= 0 or args.lease_duration < 3:
        parser.error("--resync-interval must be positive, --lease-duration at least 3")
    if args.lease is not None and args.lease.count("/") != 1:
        parser.error("--lease takes NAMESPACE/NAME")
    if args.metrics_port and args.metrics_port == args.liveness_port:
        parser.error(f"--liveness-port and --metrics-port must differ (both {args.metrics_port})")
    return args


def lease_settings(args: argparse.Namespace, holder: str) -> LeaseSettings:
    namespace, name = args.lease.split("/")
    duration = args.lease_duration
    return LeaseSettings(namespace=namespace, name=name, identity=holder, duration=duration,
                         renew_deadline=duration * 2 / 3, retry_period=duration * 2 / 15)


def kopf_settings(lease: LeaseSettings | None) -> kopf.OperatorSettings:
    """kopf's settings that the command line decides: with leader election, kopf's requests
    (which pass no guard) end within the fencing margin."""
    settings = kopf.OperatorSettings()
    settings.networking.request_timeout = (
        KOPF_REQUEST_TIMEOUT if lease is None else min(KOPF_REQUEST_TIMEOUT, lease.write_budget))
    settings.watching.chunk_size = KOPF_LIST_CHUNK
    return settings


async def serve(args: argparse.Namespace) -> int:
    holder = identity()
    health = Health()
    await health.start(args.liveness_port)
    elector = None
    lease = lease_settings(args, holder) if args.lease else None
    if lease is not None:
        kube = await Kube.connect(holder)
        elector = LeaseElector(lease, kube.coordination)
        elector.fence()
        await elector.acquire()
        renewal = asyncio.create_task(elector.renew_forever())
    health.role = "leader"
    config = Config(resync_seconds=args.resync_interval, poll_seconds=args.poll_interval,
                    namespaces=tuple(args.namespace), identity=holder,
                    home_namespace=os.environ.get("POD_NAMESPACE") or None)
    try:
        await kopf.operator(
            clusterwide=not args.namespace, namespaces=args.namespace, standalone=True,
            settings=kopf_settings(lease),
            memo=kopf.Memo(config=config, health=health,
                           guard=elector.check if elector else None))
    finally:
        if elector is not None:
            renewal.cancel()
            await elector.release()
            await kube.close()
        await health.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    import metamapper_operator.handlers  # noqa: F401  (registers the kopf handlers)

    if args.metrics_port:
        metrics_server.serve(args.metrics_port)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
