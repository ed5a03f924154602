"""Users and workspaces, written the way the web app writes them: what a datastore, a
check or an audit row refers to, for an installation without the web app, the demo and
the tests. Where the web app runs, people sign up there instead.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from metamapper.metastore.fernet import Cipher

#: Django's mark for a user who cannot sign in with a password (only through SSO or a
#: password reset): "!" and random characters.
_UNUSABLE_PASSWORD_PREFIX = "!"


@dataclass(frozen=True)
class Workspace:
    id: str
    slug: str
    name: str
    creator_id: int


def create_user(conn: psycopg.Connection, email: str, fname: str = "", lname: str = "") -> int:
    """A user with no usable password; returns its id."""
    row = conn.execute(
        "INSERT INTO auth_users (password, created_at, updated_at, fname, lname, email)"
        " VALUES (%s, now(), now(), %s, %s, %s) RETURNING id",
        (_UNUSABLE_PASSWORD_PREFIX + secrets.token_urlsafe(30), fname, lname, email),
    ).fetchone()
    assert row is not None
    return int(row[0])


def create_workspace(
    conn: psycopg.Connection, slug: str, name: str, creator_id: int, cipher: Cipher | None = None
) -> Workspace:
    """A workspace owned by ``creator_id``, with its SSH key pair (the private key
    encrypted, as the web app stores it)."""
    private, public = _ssh_keypair()
    workspace = Workspace(id=uuid.uuid4().hex, slug=slug, name=name, creator_id=creator_id)
    with conn.transaction():
        conn.execute(
            "INSERT INTO auth_workspaces (id, created_at, updated_at, slug, name,"
            " ssh_private_key, ssh_public_key, beacon_consent, creator_id)"
            " VALUES (%s, now(), now(), %s, %s, %s, %s, false, %s)",
            (workspace.id, slug, name, (cipher or Cipher.from_env()).encrypt(private), public,
             creator_id),
        )
        conn.execute(
            "INSERT INTO auth_memberships (created_at, updated_at, permissions, email,"
            " workspace_id) SELECT now(), now(), 'OWNER', email, %s FROM auth_users"
            " WHERE id = %s",
            (workspace.id, creator_id),
        )
    return workspace


def _ssh_keypair() -> tuple[str, str]:
    """A 2048-bit RSA key pair: the private key in PEM, the public one in OpenSSH form."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private.decode(), public.decode()
