"""The default configuration module (METAMAPPER_CELERY_CONFIG_MODULE=metamapper.celeryconfig).

It is Metamapper's defaults with the environment applied (see
:mod:`metamapper.settings`). Your own module can start from it::

    from metamapper.celeryconfig import *  # noqa: F403
    broker_url = "amqp://guest:guest@localhost:5672/metamapper"
"""

import os

from metamapper.settings import from_environment

globals().update(from_environment(os.environ))
