"""Metamapper's metastore on the development PostgreSQL, made as the getting-started
walkthrough makes it: a database of its own, Metamapper 1.0's tables (``metamapper
metastore init``, from ``tasks/metamapper/metastore/schema.sql``), and the Secret that
``examples/metamapper.yaml``'s ``envFrom`` names, holding the METAMAPPER_DB_* and the
METAMAPPER_FERNET_KEY its pods take. ``make demo`` and the walkthrough's end-to-end test
give their fleets one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from cryptography.fernet import Fernet

from devenv import services
from devenv.controlplane import REPO
from devenv.errors import DevenvError
from metamapper.metastore import MetastoreSettings
from metamapper_operator import crd

#: The PostgreSQL server, at the address pods reach it on (trust for the pods' network).
POSTGRES = f"postgresql://postgres@{services.HOST}:{services.POSTGRES_PORT}"
EXAMPLE = REPO / "examples" / "metamapper.yaml"
CLI = Path(sys.executable).parent / "metamapper"


def fresh_database(name: str) -> str:
    """An empty PostgreSQL database ``name`` (dropped first if a run left it); its URL."""
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    return f"{POSTGRES}/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def example() -> dict[str, Any]:
    """The Metamapper of ``examples/metamapper.yaml``."""
    found: dict[str, Any] = next(doc for doc in yaml.safe_load_all(EXAMPLE.read_text())
                                 if doc and doc["kind"] == crd.KIND)
    return found


def secret_name() -> str:
    """The Secret the example's ``envFrom`` takes the metastore's settings from."""
    (name,) = [source["secretRef"]["name"] for source in example()["spec"]["envFrom"]
               if "secretRef" in source]
    return str(name)


@dataclass(frozen=True)
class Metastore:
    """A metastore's settings and the Fernet key its datastores' passwords are under."""

    settings: MetastoreSettings
    fernet_key: str = field(repr=False)

    def environment(self) -> dict[str, str]:
        """METAMAPPER_DB_* and METAMAPPER_FERNET_KEY, for a process or a pod."""
        return {**self.settings.environment(), "METAMAPPER_FERNET_KEY": self.fernet_key}

    def secret(self) -> str:
        """The example's Secret holding :meth:`environment` (JSON for ``kubectl apply``)."""
        return json.dumps({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": secret_name()},
                           "stringData": self.environment()})

    def cli(self, *args: str, **env: str) -> str:
        """``metamapper ARGS`` on this metastore (``env`` added); its output."""
        done = subprocess.run([str(CLI), *args], capture_output=True, text=True,
                              env={**_base_env(), **self.environment(), **env})
        if done.returncode:
            raise DevenvError(f"metamapper {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout


def create(name: str) -> Metastore:
    """A new metastore in the database ``name`` (emptied first), with Metamapper's tables
    and a new Fernet key."""
    made = Metastore(MetastoreSettings.from_dsn(fresh_database(name)),
                     Fernet.generate_key().decode())
    made.cli("metastore", "init")
    return made


def _base_env() -> dict[str, str]:
    """This process's environment without its own METAMAPPER_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("METAMAPPER_")}
