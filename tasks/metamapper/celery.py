"""The Celery application ``metamapper``.

Configuration: the module named by METAMAPPER_CELERY_CONFIG_MODULE (by default
:mod:`metamapper.conf.celery`, upstream Metamapper's default, which reads the
environment). Metamapper's defaults (:mod:`metamapper.defaults`) sit beneath it, so a
module of your own only needs the settings it changes, e.g. ``broker_url``.

A Redis broker is used through :mod:`metamapper.redis_transport` (kombu's Redis transport
whose take of a message and its record as unacknowledged are one step), unless the
``broker_transport`` setting names another.
"""

import logging
import os
from collections import ChainMap
from typing import Any

from celery import Celery, signals
from celery.app.amqp import AMQP

from metamapper import metastore_env
from metamapper.bootsteps import HttpProbes, Liveness, Readiness
from metamapper.defaults import SETTINGS
from metamapper.redis_transport import BrokerConnection
from metamapper.retries import MetamapperTask

CONFIG_MODULE_ENV = "METAMAPPER_CELERY_CONFIG_MODULE"
DEFAULT_CONFIG_MODULE = "metamapper.conf.celery"


class MetamapperAMQP(AMQP):
    """Celery's messaging with broker connections that choose the worker's Redis
    transport (:class:`metamapper.redis_transport.BrokerConnection`)."""

    Connection = BrokerConnection


class MetamapperCelery(Celery):
    """Celery with Metamapper's defaults under the configuration module's settings.

    (``Celery.add_defaults`` would place them above the module, overriding it.)
    """

    amqp_cls = MetamapperAMQP

    def prepare_config(self, c: Any) -> Any:
        return ChainMap(super().prepare_config(c), SETTINGS)


os.environ.setdefault(CONFIG_MODULE_ENV, DEFAULT_CONFIG_MODULE)

app = MetamapperCelery(
    "metamapper",
    # A retry that cannot be sent keeps its message (metamapper.retries).
    task_cls=MetamapperTask,
    # metamapper.refusals last: it registers upstream's names no module implements.
    include=["metamapper.health", "metamapper.refusals"],
)
app.config_from_envvar(CONFIG_MODULE_ENV)
# The stamps the pods' probes read (metamapper.probe).
app.steps["worker"].add(HttpProbes)
app.steps["worker"].add(Liveness)
app.steps["consumer"].add(Readiness)


@signals.worker_ready.connect
def say_without_metastore(**_: Any) -> None:
    """Once, as the worker starts: it has no metastore, and what that means."""
    if not metastore_env.configured(os.environ):
        logging.getLogger(__name__).warning(metastore_env.WORKER_WARNING)


# Task metrics: connects its signal handlers (sent, received, started, ... on a port).
from metamapper import metrics  # noqa: E402, F401
