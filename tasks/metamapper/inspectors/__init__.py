"""Inspectors read a datastore's schemas, tables, columns and indexes from its system catalogs.

Each engine's module has ``inspect(url) -> list[Schema]``: a few catalog queries
for the whole database, assembled in Python (no per-table round trips), and
``version(url) -> str``: the server's version, as Metamapper records it on the datastore.
"""

from __future__ import annotations

from importlib import import_module

from metamapper.catalog import Schema
from metamapper.urls import engine_of


class InspectionError(Exception):
    """The datastore answered but could not be inspected (permissions, unsupported, ...)."""


class DatastoreUnavailable(InspectionError):
    """The datastore could not be reached: worth retrying later."""


def inspect(url: str) -> list[Schema]:
    module = import_module(f"metamapper.inspectors.{engine_of(url)}")
    schemas: list[Schema] = module.inspect(url)
    return schemas


def version(url: str) -> str:
    module = import_module(f"metamapper.inspectors.{engine_of(url)}")
    found: str = module.version(url)
    return found
