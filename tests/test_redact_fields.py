"""Field-shaped redaction keeps what no secret looks like: a log review's finding
keyed by an address or a host must stay readable, a credential field never does."""

from __future__ import annotations

import pytest

from core.redact import REDACTED, Redactor


@pytest.mark.parametrize(
    "text",
    [
        '{"key": "203.0.113.7"}',
        "key=203.0.113.7:4000",
        '{"key": "backup.evil.example"}',
        "key: 2001:db8::1",
        "              key: tunnel-token\n      volumes:",
        '{"key": "10.0.0.0/8"}',
    ],
)
def test_addresses_and_hosts_stay(text: str) -> None:
    assert Redactor([]).text(text) == text


@pytest.mark.parametrize(
    "text",
    [
        '{"key": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcDEFghiJKL"}',
        '{"api_key": "s3cr3tvalue123456"}',
        "password: example.com",
        "key: Xk9fQ2mZ7pLwR4",
        "client_secret=backup.evil.example",
    ],
)
def test_credential_fields_are_redacted(text: str) -> None:
    assert REDACTED in Redactor([]).text(text)
