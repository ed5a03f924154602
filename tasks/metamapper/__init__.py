"""Metamapper's Celery app and tasks: ``celery --app metamapper worker``.

The app lives in :mod:`metamapper.celery` (where ``celery --app metamapper`` finds
it), so that importing this package, e.g. for the ``metamapper`` command in the
operator image, does not need Celery.
"""
