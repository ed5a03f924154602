"""``metamapper-operator``: run the operator (kopf) with its settings from the command line."""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from metamapper_operator import __version__
from metamapper_operator.runtime import Config


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
    parser.add_argument("--peering", metavar="NAME",
                        help="run with kopf peering NAME (for several replicas); "
                             "standalone when omitted")
    parser.add_argument("--poll-interval", type=float, default=5.0, metavar="SECONDS",
                        help="how often every broker is measured (default 5)")
    parser.add_argument("--resync-interval", type=float, default=60.0, metavar="SECONDS",
                        help="how often every object is fully reconciled (default 60)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    if args.poll_interval <= 0 or args.resync_interval <= 0:
        parser.error("--poll-interval and --resync-interval must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    import metamapper_operator.handlers  # noqa: F401  (registers the kopf handlers)

    if args.metrics_port:
        start_http_server(args.metrics_port)
    config = Config(resync_seconds=args.resync_interval, poll_seconds=args.poll_interval)
    kopf.run(
        clusterwide=not args.namespace, namespaces=args.namespace,
        standalone=args.peering is None, peering_name=args.peering,
        # Peers of equal priority pause each other; distinct random ones elect one leader.
        priority=random.randint(1, 32767) if args.peering else 0,
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz",
        memo=kopf.Memo(config=config),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
