"""An AWS Glue datastore against moto's server (AWS itself cannot be reached from here):
its catalog as Metamapper reads it, and a revisioner run into Metamapper's catalog."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest

from metamapper.inspectors import DatastoreUnavailable, datastore_version, inspect_datastore
from metamapper.metastore import datastores, open_metastore, workspaces
from metamapper.metastore.datastores import ConnectionSettings
from metamapper.revisioner import steps
from metamapper.revisioner.collector import hashed
from tests.tasks.conftest import MetamapperDB
from tests.tasks.test_definitions import tables

ACCOUNT = "123456789012"  # moto's account


@pytest.fixture
def glue(sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Glue database with a partitioned table and a view, on moto; its name."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", sqs_endpoint)
    client = boto3.client("glue", region_name="eu-west-1")
    name = f"sales_{uuid.uuid4().hex[:8]}"
    client.create_database(DatabaseInput={"Name": name})
    client.create_table(DatabaseName=name, TableInput={
        "Name": "orders", "TableType": "EXTERNAL_TABLE", "Description": "one row per order",
        "StorageDescriptor": {"Columns": [
            {"Name": "id", "Type": "bigint", "Comment": "the order"},
            {"Name": "items", "Type": "STRUCT<sku:string,qty:int>"},
        ]},
        "PartitionKeys": [{"Name": "ds", "Type": "string"}],
    })
    client.create_table(DatabaseName=name, TableInput={
        "Name": "big_orders", "TableType": "VIRTUAL_VIEW",
        "StorageDescriptor": {"Columns": [{"Name": "id", "Type": "bigint"}]},
    })
    yield name
    client.delete_table(DatabaseName=name, Name="orders")
    client.delete_table(DatabaseName=name, Name="big_orders")
    client.delete_database(Name=name)


SETTINGS = ConnectionSettings("glue", "", 0, ACCOUNT, "", "", {
    "region": "eu-west-1", "role": f"arn:aws:iam::{ACCOUNT}:role/metamapper-reader"})


def test_glue_catalog(glue: str) -> None:
    [sales] = [s for s in inspect_datastore(SETTINGS) if s.name == glue]
    assert sales.native_id == hashed(ACCOUNT, glue)
    big_orders, orders = sales.tables
    assert (orders.table_type, orders.comment) == ("EXTERNAL_TABLE", "one row per order")
    assert orders.native_id == hashed(f"{ACCOUNT}.{glue}.orders")
    assert [(c.name, c.ordinal, c.data_type, c.primary_key, c.comment) for c in orders.columns] \
        == [("id", 1, "bigint", False, "the order"), ("items", 2, "struct", False, None),
            ("ds", 3, "string", True, None)]
    assert orders.columns[0].native_id == hashed(f"{ACCOUNT}.{glue}.orders", "id")
    assert (big_orders.table_type, [c.name for c in big_orders.columns]) == (
        "VIRTUAL_VIEW", ["id"])
    assert datastore_version(SETTINGS) == boto3.__version__


def test_glue_runs_into_metamappers_catalog(
    glue: str, metamapper_db: MetamapperDB
) -> None:
    with open_metastore() as conn:
        owner = workspaces.create_user(conn, "glue@example.org")
        workspace = workspaces.create_workspace(conn, "aws", "AWS", owner)
        datastore_id = datastores.register(conn, workspace.id, "Glue", SETTINGS)
        assert steps.run_now(conn, datastore_id).status == "SUCCESS"
        rows = tables(conn, datastore_id)
        assert {rows[name][3] for name in ("orders", "big_orders")} == {
            "EXTERNAL_TABLE", "VIRTUAL_VIEW"}
        [(partition_key,)] = conn.execute(
            "SELECT name FROM definitions_column WHERE table_id = %s AND is_primary",
            (rows["orders"][1],)).fetchall()
        assert partition_key == "ds"


def test_unreachable_glue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(DatastoreUnavailable):
        inspect_datastore(ConnectionSettings("glue", "", 0, ACCOUNT, "", "",
                                             {"region": "eu-west-1"}))
