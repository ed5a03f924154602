"""The worker shows URLs through the shared helper: one mask, credentials decoded."""

from __future__ import annotations

from datetime import UTC, datetime

from metamapper.inspectors.mysql import connect_args
from metamapper.metastore.datastores import Datastore
from metamapper_urls import REDACTED


def test_a_datastore_shows_its_url_masked_or_the_variable_it_comes_from() -> None:
    now = datetime.now(UTC)
    literal = Datastore(1, "shop", "postgresql", "postgresql://app:s3cret@db/shop", None, 60, now)
    assert literal.display_url == f"postgresql://app:{REDACTED}@db/shop"
    from_env = Datastore(2, "crm", "mysql", None, "CRM_URL", 60, now)
    assert from_env.display_url == "$CRM_URL"


def test_mysql_credentials_are_percent_decoded() -> None:
    args = connect_args("mysql://us%2Fer:p%40ss%2Fw%25rd@maria:3307/db")
    assert (args["host"], args["port"], args["user"], args["password"]) == (
        "maria", 3307, "us/er", "p@ss/w%rd")
