"""The default Celery configuration module: ``metamapper.conf.celery``.

It is upstream Metamapper's default ``METAMAPPER_CELERY_CONFIG_MODULE``, so a module of
your own written for Metamapper works here unchanged::

    from metamapper.conf.celery import *  # noqa: F403
    broker_url = "amqp://guest:guest@localhost:5672/metamapper"

Its settings are Metamapper's defaults (:mod:`metamapper.defaults`) with the environment
applied (:mod:`metamapper.settings`: ``METAMAPPER_CELERY_BROKER_URL``,
``METAMAPPER_CELERY_RESULT_BACKEND``, ``METAMAPPER_CELERY_SETTINGS``, ...). Upstream's
``task_always_eager`` under Django's test runner has no use in a worker and is left out.
"""

import os

from metamapper.settings import from_environment

_SETTINGS = from_environment(os.environ)
globals().update(_SETTINGS)
# What ``import *`` gives a module that extends this one: the settings, nothing else.
__all__ = sorted(_SETTINGS)
