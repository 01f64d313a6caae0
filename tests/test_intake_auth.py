"""Signature and token checks, including property tests over arbitrary inputs."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from intake.auth import sign, verify_bearer, verify_hmac

NOW = 1_800_000_000
secrets_st = st.binary(min_size=1, max_size=64)


def headers(ts: object, sig: str) -> dict[str, str]:
    return {"x-mcp-ir-timestamp": str(ts), "x-mcp-ir-signature": sig}


@settings(max_examples=300, deadline=None)
@given(secret=secrets_st, body=st.binary(max_size=2048), skew=st.integers(-300, 300))
def test_valid_signature_within_tolerance_is_accepted(secret, body, skew):
    ts = NOW + skew
    assert verify_hmac(headers(ts, sign(secret, ts, body)), body, (secret,), now=NOW).ok


@settings(max_examples=300, deadline=None)
@given(
    secret=secrets_st,
    body=st.binary(min_size=1, max_size=512),
    index=st.integers(min_value=0),
    flip=st.integers(1, 255),
)
def test_any_changed_body_byte_is_refused(secret, body, index, flip):
    signature = sign(secret, NOW, body)
    changed = bytearray(body)
    changed[index % len(body)] ^= flip
    result = verify_hmac(headers(NOW, signature), bytes(changed), (secret,), now=NOW)
    assert not result.ok
    assert result.reason == "signature does not match any active secret"


@settings(max_examples=200, deadline=None)
@given(secret=secrets_st, other=secrets_st, body=st.binary(max_size=256))
def test_other_secret_is_refused_and_rotation_accepts_both(secret, other, body):
    signature = sign(other, NOW, body)
    assert verify_hmac(headers(NOW, signature), body, (secret, other), now=NOW).ok
    if other != secret:
        assert not verify_hmac(headers(NOW, signature), body, (secret,), now=NOW).ok


@settings(max_examples=200, deadline=None)
@given(secret=secrets_st, body=st.binary(max_size=64), skew=st.integers(301, 10**9))
def test_timestamps_beyond_300s_either_way_are_refused(secret, body, skew):
    for ts in (NOW - skew, NOW + skew):
        result = verify_hmac(headers(ts, sign(secret, ts, body)), body, (secret,), now=NOW)
        assert not result.ok
        assert result.reason == "timestamp outside the tolerance window"


@settings(max_examples=500, deadline=None)
@given(
    ts=st.text(max_size=20),
    sig=st.text(max_size=80),
    body=st.binary(max_size=64),
    secret=secrets_st,
)
def test_arbitrary_headers_never_raise_and_never_pass(ts, sig, body, secret):
    result = verify_hmac(headers(ts, sig), body, (secret,), now=NOW)
    # A forged signature can only pass by finding the HMAC; the strategy cannot.
    assert not result.ok
    assert result.reason


TOKEN_CHARS = string.ascii_letters + string.digits + "-._~+/="
tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(secret=tokens, other=tokens, junk=st.text(max_size=80))
def test_bearer_accepts_exactly_the_token(secret, other, junk):
    token = secret.encode()
    assert verify_bearer({"authorization": f"Bearer {secret}"}, (token,)).ok
    assert verify_bearer({"authorization": f"Bearer {other}"}, (token,)).ok == (other == secret)
    assert not verify_bearer({"authorization": secret}, (token,)).ok
    if secret not in junk:
        assert not verify_bearer({"authorization": junk}, (token,)).ok


def test_missing_headers_are_refused_with_a_reason():
    assert (
        verify_hmac({}, b"{}", (b"k",), now=NOW).reason == "missing timestamp or signature header"
    )
    result = verify_hmac(headers(NOW, "sha256=abc"), b"{}", (b"k",), now=NOW)
    assert result.reason == "signature is not v1=<hex>"
    assert verify_bearer({}, (b"k",)).reason == "missing bearer token"
