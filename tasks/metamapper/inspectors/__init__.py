"""Inspectors read a datastore's schemas, tables, columns and indexes from its system catalogs.

Each engine's module has ``inspect(...) -> list[Schema]``: a few catalog queries
for the whole database, assembled in Python (no per-table round trips), and
``version(...) -> str``: the server's version, as Metamapper records it on the datastore.
PostgreSQL and MySQL/MariaDB take a connection URL; the Hive Metastore and AWS Glue the
datastore's connection settings. :func:`inspect_datastore` and :func:`datastore_version`
pick the module by Metamapper's engine name.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING

from metamapper.catalog import Schema
from metamapper.urls import engine_of

if TYPE_CHECKING:
    from metamapper.metastore.datastores import ConnectionSettings

#: Metamapper's engines read through a connection URL, by their module.
URL_ENGINES = {"postgresql": "postgresql", "redshift": "postgresql", "mysql": "mysql"}
#: Metamapper's engines read from their connection settings, by their module.
SETTINGS_ENGINES = {"hive": "hive", "glue": "glue"}


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


def inspect_datastore(connection: ConnectionSettings) -> list[Schema]:
    """The catalog of a datastore registered in Metamapper, whatever its engine."""
    if connection.engine in URL_ENGINES:
        return inspect(connection.url())
    schemas: list[Schema] = _settings_module(connection.engine).inspect(connection)
    return schemas


def datastore_version(connection: ConnectionSettings) -> str:
    if connection.engine in URL_ENGINES:
        return version(connection.url())
    found: str = _settings_module(connection.engine).version(connection)
    return found


def _settings_module(engine: str) -> ModuleType:
    if engine not in SETTINGS_ENGINES:
        raise InspectionError(f"{engine} datastores are not inspected by this image")
    return import_module(f"metamapper.inspectors.{SETTINGS_ENGINES[engine]}")
