"""The worker shows URLs through the shared helper: one mask, credentials decoded."""

from __future__ import annotations

from metamapper.inspectors.mysql import connect_args


def test_mysql_credentials_are_percent_decoded() -> None:
    args = connect_args("mysql://us%2Fer:p%40ss%2Fw%25rd@maria:3307/db")
    assert (args["host"], args["port"], args["user"], args["password"]) == (
        "maria", 3307, "us/er", "p@ss/w%rd")
