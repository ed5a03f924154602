"""``make demo``: the whole loop on one machine, live in the terminal, on real pods.

A local control plane with a real node (containerd, the kubelet, kube-proxy), the project's
images built from its Dockerfile, the operator installed with ``helm install``, and real
Celery workers in pods on a real Redis (a database the demo claims), with Metamapper's
metastore on the local PostgreSQL (``devenv.metastore``, as the walkthrough makes it). The
demo applies ``examples/metamapper.yaml`` (with the built worker image), registers a sample
PostgreSQL datastore (whose inspection wakes the revisioner pool from zero), sends a burst
of tasks, and shows queue depth, workers and completions as the fleet grows, drains and
shrinks. Then a summary, which fails the demo, naming the pod and the line, on a task error
in the log of any container of its pods (``devenv.podlogs``), and everything it started is
stopped. Ctrl-C stops it cleanly at any point.

With ``--dashboard PATH`` a real Prometheus scrapes the operator and the worker pods as the
chart's ServiceMonitor and PodMonitor would (``devenv.monitors``), and the chart's Grafana
dashboard is drawn from it at the end (``devenv.dashboard``): its panels and queries over
the demo's run, not Grafana's rendering of them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from celery import Celery

# Stamps the published_at header on every task this process sends, as the worker app
# does: the operator then tells the age of each queue's oldest message.
import metamapper.metrics
import metamapper_operator.metrics
from devenv import chart, dashboard, metastore, monitors, prometheus, redis_claims
from devenv.controlplane import REPO
from devenv.errors import DevenvError
from devenv.pictures import Moment, Timeline, dashboard_picture, demo_picture
from devenv.podlogs import PodLogs
from devenv.scrape import Sample, exported, names, scrape, total
from devenv.stack import OPERATOR_NAMESPACE, OPERATOR_RELEASE, OPERATOR_SELECTOR, Stack
from devenv.workload import FLAKY, MODULE, TASK, tally
from metamapper_operator import crd

NAMESPACE = "demo"
#: How long the demo holds its Redis database (released at its end): above its longest run.
REDIS_CLAIM_SECONDS = 3600
PICTURE = REPO / "build" / "demo.png"
OPERATOR_METRICS_PORT = 9090
WORKER_METRICS_PORT = 9808
# Short windows so the demo shrinks within a minute (the defaults are 60 s and 300 s).
DEMO_AUTOSCALING = {"scaleDownStabilizationSeconds": 15, "scaleToZeroCooldownSeconds": 10}
#: The demo's Prometheus (``--dashboard``) scrapes every 5 s, not every 30 s as the chart's
#: monitors do: the demo lasts minutes.
SCRAPE_SECONDS = 5


def say(message: str) -> None:
    print(message, flush=True)


def sample_datastore() -> str:
    """A small PostgreSQL database for the revisioner to inspect; its URL."""
    url = metastore.fresh_database("metamapper_demo_sample")
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(20):
            conn.execute(f"CREATE TABLE table_{i} (id SERIAL PRIMARY KEY, "
                         f"name TEXT NOT NULL, created_at TIMESTAMPTZ, amount NUMERIC(10, 2))")
    return url


def demo_patch(image: str) -> dict[str, Any]:
    """What the demo changes in the example: the image, pools' windows, the workload's
    tasks. (The metastore's settings come from the Secret the example names.)"""
    pools = [{**pool, "autoscaling": {**pool.get("autoscaling", {}), **DEMO_AUTOSCALING}}
             for pool in metastore.example()["spec"]["pools"]]
    return {"spec": {
        "image": image,
        "pools": pools,
        "celery": {"settings": {"imports": [MODULE]}},
    }}


class Demo:
    def __init__(self, root: Path, tasks: int, seconds: float, picture: Path = PICTURE,
                 dashboard: Path | None = None) -> None:
        self.root, self.tasks, self.seconds, self.picture = root, tasks, seconds, picture
        self.dashboard = dashboard
        self.prometheus: prometheus.Prometheus | None = None
        self.scrapes_from = 0.0   # when the demo's Prometheus started (epoch seconds)
        self.targets = root / "prometheus" / "pods.json"
        self.timeline = Timeline()
        self.scraped = False
        self.stack = Stack(root, NAMESPACE, services=("redis", "postgres"))
        self.broker = ""   # a Redis database of the demo's own, claimed once Redis runs
        self.broker_claim: redis_claims.Claim | None = None
        self.metastore: metastore.Metastore | None = None
        # Every pod's log, a terminating pod's read before it goes: checked at the end.
        self.pod_logs = PodLogs(self.stack.kubectl, NAMESPACE)
        self.started = time.monotonic()
        self.peak: dict[str, int] = {}

    def metamapper(self) -> dict[str, Any]:
        out = self.stack.kubectl("get", "-n", NAMESPACE, "metamapper", "metamapper", "-o",
                                 "json", check=False).stdout
        return json.loads(out) if out else {}

    def line(self, sent: int) -> str:
        status = self.metamapper().get("status") or {}
        pools = []
        backlog, workers = {}, {}
        for pool in status.get("pools") or []:
            name = pool["name"]
            self.peak[name] = max(self.peak.get(name, 0), pool.get("readyReplicas", 0))
            pools.append(f"{name}: backlog {pool.get('backlog', '?'):>3} "
                         f"workers {pool.get('readyReplicas', 0)}/{pool.get('replicas', 0)}")
            backlog[name] = int(pool.get("backlog") or 0)
            workers[name] = int(pool.get("readyReplicas") or 0)
        done = tally(self.broker, self._ids).done if sent else 0
        elapsed = time.monotonic() - self.started
        self.timeline.add(Moment(elapsed, backlog, workers, done))
        return f"{elapsed:6.0f}s  " + " | ".join(pools) + f" | tasks done {done}/{sent}"

    def watch(self, seconds: float, sent: int, until: Any = None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.stack.check()
            say(self.line(sent))
            if self.prometheus is not None:
                self.list_targets()
            self.pod_logs.read(terminating_only=True)
            if sent and not self.scraped and self.pools().get("default", {}).get(
                    "readyReplicas", 0) >= 2:
                self.scraped = self.show_metrics()
            if until is not None and until():
                return
            time.sleep(2)

    def pools(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in (self.metamapper().get("status") or {}).get("pools") or []}

    def run(self) -> int:
        say("metamapper-operator demo: a local Kubernetes cluster with a real node, the "
            "operator in a pod, and real Celery workers in pods on a real Redis.\nIt takes "
            "about 4 minutes (the first run also builds the Kubernetes binaries and the "
            "images: about 20 minutes). Ctrl-C stops it at any point.\n")
        say(f"[1/6] starting everything from cold where needed (state in {self.root}):")
        self.stack.start(say)
        if self.dashboard is not None:
            self.start_prometheus()
        # Claimed as the suite's tests claim theirs, so a test run beside the demo never
        # empties it under the demo's workers.
        claimed = redis_claims.claim(range(1, 256), seconds=REDIS_CLAIM_SECONDS)
        if claimed is None:
            raise DevenvError("every database of the development Redis is claimed")
        self.broker, self.broker_claim = claimed.url, claimed
        # As the walkthrough makes it, before the pods start: a database, Metamapper's
        # tables, and the Secret the example's envFrom names.
        self.metastore = metastore.create("metamapper_demo")
        assert self.stack.images is not None
        say(f"      worker pods run {self.stack.images.workload} (the worker image plus "
            "the demo's tasks)")
        say("[2/6] kubectl apply -f examples/metamapper.yaml (broker URL in the Secret "
            "metamapper-broker, pointing at the local Redis; the metastore's settings in "
            f"the Secret {metastore.secret_name()}, its database on the local PostgreSQL)")
        self.stack.kubectl("create", "secret", "generic", "metamapper-broker", "-n", NAMESPACE,
                           f"--from-literal=url={self.broker}")
        self.stack.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=self.metastore.secret())
        self.stack.kubectl("apply", "-n", NAMESPACE, "-f", str(metastore.EXAMPLE))
        self.stack.kubectl("patch", "-n", NAMESPACE, "metamapper", "metamapper", "--type=merge",
                           "-p", json.dumps(demo_patch(self.stack.images.workload)))
        say("      (the demo shortens the scale-down windows to 15 s so you can watch "
            "the fleet shrink)")
        self._ids: list[str] = []
        self.watch(90, 0, until=lambda: self.pools().get("default", {}).get(
            "readyReplicas", 0) >= 1)
        say("\n" + self.stack.kubectl("get", "-n", NAMESPACE, crd.PLURAL).stdout)

        say("[3/6] registering a sample datastore and queueing its inspection "
            "(the revisioner pool wakes up from zero)")
        # Metamapper's way, without its web app: a workspace, a datastore whose password is
        # encrypted with the fleet's METAMAPPER_FERNET_KEY.
        self.metastore.cli("metastore", "add-workspace", "demo", "--owner", "demo@example.com")
        self.metastore.cli("metastore", "add-datastore", "sample", "--workspace", "demo",
                           "--url-env", "SAMPLE_URL", SAMPLE_URL=sample_datastore())
        app = Celery("demo", broker=self.broker, set_as_current=False)
        # Metamapper's beat does this: create the runs that are due, then queue them (here
        # at once, not spread over its 15 minutes).
        (app.signature("app.revisioner.tasks.v1.scheduler.create_runs", queue="revisioner")
         | app.signature("app.revisioner.tasks.v1.scheduler.queue_runs",
                         kwargs={"countdown_in_minutes": 0}, queue="revisioner",
                         immutable=True)).apply_async()
        # One task that is retried once and then fails, so the workers' failure and retry
        # counters have something to show mid-burst.
        app.send_task(FLAKY, queue="default")

        say(f"[4/6] sending a burst of {self.tasks} tasks of {self.seconds:.0f} s each to the "
            "default queue")
        for _ in range(self.tasks):
            task_id = uuid.uuid4().hex
            self._ids.append(task_id)
            app.send_task(TASK, args=[task_id, self.seconds, self.broker], queue="default")
        app.close()
        burst = time.monotonic()
        self.watch(600, self.tasks, until=lambda: tally(self.broker, self._ids).done
                   == self.tasks)
        drained = time.monotonic() - burst

        say("[5/6] queues drained: waiting for the fleet to shrink (15 s window) ...")
        self.watch(120, self.tasks, until=lambda: all(
            p.get("replicas") == (1 if n == "default" else 0) for n, p in self.pools().items()))
        say("\n" + self.stack.kubectl("get", "-n", NAMESPACE, crd.PLURAL, "-o", "wide").stdout)
        events = self.stack.kubectl("get", "events", "-n", NAMESPACE, "--field-selector",
                                    "involvedObject.kind=Metamapper",
                                    "--sort-by=.lastTimestamp").stdout
        say("Events on the Metamapper (kubectl get events):\n" + "\n".join(
            events.splitlines()[-8:]))
        result = tally(self.broker, self._ids)
        runs = self.metastore.cli("runs")
        self.pod_logs.read()
        errors = self.pod_logs.errors(expected=[FLAKY])
        say(f"\n[6/6] summary\n  tasks sent {result.sent}, completed {result.done}, "
            f"lost {result.lost}, ran twice {result.duplicated}, interrupted "
            f"{result.interrupted}\n  peak workers: "
            + ", ".join(f"{k} {v}" for k, v in self.peak.items())
            + f"\n  time to drain the burst: {drained:.0f} s\n  revisioner runs:\n"
            + "\n".join("    " + line for line in runs.splitlines()[:4]))
        picture = demo_picture(self.timeline, self.picture, (
            f"make demo: a burst of {self.tasks} tasks of {self.seconds:g} s "
            f"(drained in {drained:.0f} s)"))
        say(f"  picture of the run: {picture}")
        if self.prometheus is not None:
            say(f"  the dashboard over the run: {self.draw_dashboard()}")
        checked = (f"the logs of {len(self.pod_logs.logs)} containers (the task that "
                   "fails on purpose aside)")
        if errors:
            say(f"\nFAILED: {len(errors)} task errors in {checked}:\n"
                + "\n".join(f"  {error}" for error in errors))
        else:
            say(f"  no task error in {checked}")
        return 0 if result.lost == 0 and result.duplicated == 0 and not errors else 1

    def list_targets(self) -> None:
        """Every pod, listed through the Kubernetes API, as the demo's Prometheus' targets
        (it watches the file)."""
        pods = json.loads(self.stack.kubectl("get", "pods", "--all-namespaces", "-o",
                                             "json").stdout)["items"]
        prometheus.write_targets(self.targets, monitors.pod_target_groups(pods))

    def start_prometheus(self) -> None:
        interval = f"{SCRAPE_SECONDS}s"
        config = chart.scrape_config(OPERATOR_RELEASE, OPERATOR_NAMESPACE, self.targets,
                                     interval)
        self.targets.parent.mkdir(parents=True, exist_ok=True)
        self.list_targets()
        self.prometheus = prometheus.start(self.targets.parent, config)
        self.scrapes_from = time.time()
        say(f"  prometheus: scraping the operator and the worker pods every {interval}, "
            f"as the chart's ServiceMonitor and PodMonitor would ({self.prometheus.url})")

    def draw_dashboard(self) -> Path:
        """The chart's dashboard over the run, from the demo's Prometheus."""
        assert self.prometheus is not None and self.dashboard is not None
        server, window = self.prometheus, (self.scrapes_from, time.time())
        step = max(SCRAPE_SECONDS, (window[1] - window[0]) / 300)
        board = dashboard.load()
        drawn = dashboard.draw(board, lambda expr: server.query_range(expr, *window, step))
        return dashboard_picture(board, drawn, window, self.dashboard, (
            "the chart's dashboard.json, its panels and queries drawn from a real Prometheus "
            "scraping make demo; not Grafana itself"))

    def show_metrics(self) -> bool:
        """Scrape the operator's pod and the default pool's worker pods mid-burst, as
        Prometheus would, and show what they say; False when none of them serves yet (a
        worker opens its port once Celery is ready, after its pod is Running)."""
        operator = [f"http://{ip}:{OPERATOR_METRICS_PORT}/metrics" for ip in
                    self.stack.pod_ips(OPERATOR_NAMESPACE, OPERATOR_SELECTOR).values()]
        workers = [f"http://{ip}:{WORKER_METRICS_PORT}/metrics" for ip in self.stack.pod_ips(
            NAMESPACE, "app.kubernetes.io/component=worker,metamapper.io/pool=default"
        ).values()]
        ops, tasks = scrape_all(operator), scrape_all(workers)
        if not ops or not tasks:
            return False
        queue = {"pool": "default", "queue": "default"}
        say(f"      /metrics mid-burst: the operator ({len(ops)} samples) and "
            f"{len(workers)} default workers ({len(tasks)} samples):\n"
            f"        queue default: waiting "
            f"{total(ops, 'metamapper_queue_messages_waiting', **queue):.0f}, in flight "
            f"{total(ops, 'metamapper_queue_messages_in_flight', **queue):.0f}, oldest "
            f"{total(ops, 'metamapper_queue_oldest_message_age_seconds', **queue):.1f} s; "
            f"scale-ups {total(ops, 'metamapper_scale_events_total', direction='up'):.0f}; "
            f"broker up {total(ops, 'metamapper_broker_up'):.0f}\n"
            f"        workers up {total(tasks, 'celery_worker_up'):.0f}, tasks received "
            f"{total(tasks, 'celery_task_received_total'):.0f}, succeeded "
            f"{total(tasks, 'celery_task_succeeded_total'):.0f}, mean queue wait "
            f"{mean(tasks, 'metamapper_task_queue_wait_seconds'):.1f} s, mean runtime "
            f"{mean(tasks, 'celery_task_runtime'):.1f} s")
        absent = sorted(name for name in exported(metamapper_operator.metrics)
                        | exported(metamapper.metrics) if not name.endswith("_created")
                        and name not in names(ops) | names(tasks))
        say("        every exported metric present" if not absent else
            f"        not (yet) in these scrapes: {', '.join(absent)}")
        return True


def scrape_all(urls: list[str]) -> list[Sample]:
    """The samples of every endpoint that answers."""
    found: list[Sample] = []
    for url in urls:
        try:
            found += scrape(url)
        except OSError:  # not serving yet (URLError is an OSError)
            continue
    return found


def mean(samples: list[Sample], histogram: str) -> float:
    count = total(samples, f"{histogram}_count")
    return total(samples, f"{histogram}_sum") / count if count else 0.0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=160, help="tasks in the burst")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds each task works")
    parser.add_argument("--keep", action="store_true", help="keep the state folder")
    parser.add_argument("--picture", type=Path, default=PICTURE,
                        help=f"where the PNG of the run goes (default {PICTURE})")
    parser.add_argument("--dashboard", type=Path, metavar="PATH",
                        help="scrape the demo with a real Prometheus and draw the chart's "
                        "dashboard over the run to this PNG")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="metamapper-demo-"))
    demo = Demo(root, args.tasks, args.seconds, args.picture, args.dashboard)
    signal.signal(signal.SIGTERM, _interrupt)  # a TERM from outside stops it like Ctrl-C
    code = 1
    try:
        code = demo.run()
    except KeyboardInterrupt:
        say("\ninterrupted: stopping ...")
        code = 130
    except DevenvError as err:
        say(f"\nerror: {err}")
    finally:
        if demo.prometheus is not None:
            demo.prometheus.stop()
        demo.stack.stop()
        if demo.broker_claim:
            redis_claims.release(demo.broker_claim)
        say(f"stopped: no pod or process left behind. Logs: {root}" if args.keep
            else "stopped: no pod or process left behind.")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
