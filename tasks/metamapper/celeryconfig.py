"""The name this image's default configuration module had: objects and environments that
still name it get :mod:`metamapper.conf.celery`, the default now."""

from metamapper.conf.celery import *  # noqa: F403
