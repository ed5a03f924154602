"""The metastore: datastores, runs, the current catalog and its revisions.

PostgreSQL in production, a SQLite file as the embedded default; see
:func:`metamapper.metastore.connection.default_database_url`.
"""

from metamapper.metastore.connection import Database, connect, default_database_url

__all__ = ["Database", "connect", "default_database_url"]
