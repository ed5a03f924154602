"""The encryption of secrets in Metamapper's metastore (a datastore's password, ...).

Metamapper stores such a column as ``bytea`` holding a Fernet token. Its keys come from
METAMAPPER_FERNET_KEY, a comma-separated list of secrets of any form: each secret is
stretched into a Fernet key with HKDF-SHA256 (32 bytes, the fixed salt and info below),
the first key encrypts and every key may decrypt, which is how keys are rotated. The
list is split exactly as the web app splits it (no trimming), and an absent variable is
one empty secret, as there, so both sides always derive the same keys.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FERNET_KEY_ENV = "METAMAPPER_FERNET_KEY"
_HKDF_SALT = b"django-fernet-fields-hkdf-salt"
_HKDF_INFO = b"django-fernet-fields"


class UndecryptableSecret(Exception):
    """A stored secret no key of METAMAPPER_FERNET_KEY opens; the message holds no secret."""


def derive_key(secret: str) -> bytes:
    """The Fernet key Metamapper derives from one secret of METAMAPPER_FERNET_KEY."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode()))


class Cipher:
    """Encrypts with the first secret's key, decrypts with any."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one secret is needed")
        self._fernet = MultiFernet([Fernet(derive_key(secret)) for secret in secrets])

    def __repr__(self) -> str:
        return "Cipher(...)"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Cipher:
        env = os.environ if environ is None else environ
        return cls(env.get(FERNET_KEY_ENV, "").split(","))

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def decrypt(self, token: bytes, what: str) -> str:
        """The plain text of ``token``; ``what`` names the column in the error, e.g.
        ``"the password of datastore 'shop'"``."""
        try:
            return self._fernet.decrypt(bytes(token)).decode()
        except InvalidToken:
            raise UndecryptableSecret(
                f"cannot decrypt {what}: none of the keys in {FERNET_KEY_ENV} encrypted it"
                " (is it the web app's value?)"
            ) from None
