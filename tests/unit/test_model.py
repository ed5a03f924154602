"""The spec model: a bad object is refused with the field it is wrong in."""

from __future__ import annotations

from typing import Any

import pytest

from metamapper_operator.model import SpecError, parse
from tests.unit.sample import body


@pytest.mark.parametrize(("spec", "field"), [
    ({"pools": [{"name": "a", "queues": ["q"]}, {"name": "b", "queues": ["q"]}]},
     "spec.pools[1].queues"),
    ({"env": [{"name": "METAMAPPER_BROKER_URL", "value": "x"}]}, "spec.env[0].name"),
    ({"celery": {"settings": {"result_backend": "redis://x"}}},
     "spec.celery.settings.result_backend"),
    ({"broker": {"url": "kafka://k"}}, "spec.broker"),
    ({"broker": {"url": "redis://r", "transport": "sqs"}}, "spec.broker.transport"),
    ({"broker": {}}, "spec.broker"),
])
def test_spec_errors_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse(body(**spec))
    assert raised.value.field == field


@pytest.mark.parametrize("url", ["redis://127.0.0.1:notaport/0", "redis://:pw@r:99999/0"])
def test_a_port_no_client_can_use_is_an_invalid_spec(url: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse(body(broker={"url": url}))
    assert "port" in raised.value.message and "pw" not in raised.value.message
