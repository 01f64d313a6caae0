"""Arbitrary signed bodies against the real server: only 2xx/4xx answers, never 5xx,
and the server stays healthy."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.plugins.intake import SOURCES
from tests.test_intake_formats import documents, json_values

ALLOWED = {200, 202, 400, 422}


@pytest.fixture
def fuzz_target(make_intake_server):
    server = make_intake_server()
    with httpx.Client(timeout=30) as client:
        yield server, client
    assert httpx.get(f"{server.url}/healthz").status_code == 200


FORMAT_OF = {name: spec["format"] for name, spec in SOURCES.items() if name != "token-src"}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_signed_arbitrary_input_never_gets_a_5xx(fuzz_target, data):
    server, client = fuzz_target
    source = data.draw(st.sampled_from(sorted(FORMAT_OF)))
    body = data.draw(
        st.binary(max_size=512)
        | json_values.map(lambda v: json.dumps(v).encode())
        | documents(FORMAT_OF[source]).map(lambda v: json.dumps(v).encode())
    )
    response = server.post(source, body, client=client)
    assert response.status_code in ALLOWED, response.text
    assert response.headers["content-type"] == "application/json"
