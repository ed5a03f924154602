from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metamapper.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/x", "postgresql://app:****@db:5432/x"),
        ("mysql://root@127.0.0.1:3306/db", "mysql://root@127.0.0.1:3306/db"),
        ("amqp://guest:guest@rabbit/vhost", "amqp://guest:****@rabbit/vhost"),
        ("redis://:pw@[::1]:6379/0", "redis://:****@[::1]:6379/0"),
        ("sqlite:////var/lib/m.db", "sqlite:////var/lib/m.db"),
        ("sqs://", "sqs://"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text() -> None:
    text = 'could not connect to "postgresql://u:hunter2@h/db": refused'
    assert redact_text(text) == 'could not connect to "postgresql://u:****@h/db": refused'


_password = st.text(string.ascii_letters + string.digits + "!$&'()*+,;=-._~", min_size=4)


@given(password=_password, user=st.text(string.ascii_lowercase, min_size=1, max_size=8))
def test_password_never_shown(password: str, user: str) -> None:
    url = f"postgresql://{user}:{password}@db.example:5432/catalog"
    assert f":{password}@" not in redact_url(url)
    assert f":{password}@" not in redact_text(f"error for {url}")
