"""The metastore: Metamapper 1.0's PostgreSQL database, shared with its web app.

:func:`open_metastore` connects from METAMAPPER_DB_*; :mod:`.datastores` reads the
datastores (credentials decrypted with METAMAPPER_FERNET_KEY, see :mod:`.fernet`);
:mod:`.heartbeats` keeps the beat's heartbeat; :mod:`.schema` creates the tables where no
web app did.
"""

from metamapper.metastore.connection import (
    MetastoreNotConfigured,
    MetastoreSettings,
    MetastoreUnavailable,
    open_metastore,
)

__all__ = ["MetastoreNotConfigured", "MetastoreSettings", "MetastoreUnavailable",
           "open_metastore"]
