"""AWS Secrets Manager as a credential store (boto3; the client is passed in).

Rotation writes a new secret version: Secrets Manager stages it ``AWSCURRENT`` and
moves the previous current version to ``AWSPREVIOUS`` in the same call, so the
old version is staged out, not deleted (a drill can roll back to it).

Idempotency uses Secrets Manager's own mechanism: every write carries a
``ClientRequestToken`` that becomes the version id. A retry with the same token
and the same value is ignored by the service (no new version); the same token
with a different value is refused (``ResourceExistsException``). The token is
derived from the incident id and the material's fingerprint
(:func:`request_token`), so a run that crashed after the write and runs again
sends the same token. moto 5.2.5 (the test endpoint) honours this for
``CreateSecret`` and ``PutSecretValue`` — tested in ``tests/test_aws_secrets.py``.
As a second line, :func:`put_secret_version` checks first: if a version with the
token already exists it does not write at all.

Errors name the secret id and the AWS error code, never the value.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from pydantic import SecretStr

from core.errors import ConfigError, CredentialsError, McpIrError, OperationFailed, TransientError
from core.redact import fingerprint

log = logging.getLogger(__name__)

CURRENT = "AWSCURRENT"
PREVIOUS = "AWSPREVIOUS"
# Fixed namespace so the same (incident, material) always yields the same token.
_TOKEN_NAMESPACE = uuid.UUID("6f1d2c1e-5b0a-4f57-9a3e-2f6c1b7d8e90")
_TRANSIENT_CODES = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "InternalServiceError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
}
_CREDENTIAL_CODES = {
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "DecryptionFailure",
}
_CONFIG_CODES = {
    "ResourceNotFoundException",
    "InvalidParameterException",
    "InvalidRequestException",
    "ValidationException",
    "ResourceExistsException",
    "MalformedPolicyDocumentException",
}


@dataclass(frozen=True)
class SecretVersion:
    """One version of a secret (no value).

    Attributes:
        version_id: The version id (our ``ClientRequestToken`` for versions we wrote).
        stages: Staging labels, e.g. ``("AWSCURRENT",)``; empty when deprecated.
        created: When the version was created, if the service says.
    """

    version_id: str
    stages: tuple[str, ...]
    created: datetime | None


@dataclass(frozen=True)
class PutResult:
    """The outcome of :func:`put_secret_version`.

    Attributes:
        secret_id: The secret's name or ARN as given.
        arn: The secret's ARN.
        version_id: The version now staged ``AWSCURRENT`` (= the request token).
        created: True when this call created the version; False when it already
            existed (a retry), in which case nothing was written.
        secret_created: True when the secret itself did not exist and was created.
        previous_version_id: The version staged ``AWSPREVIOUS`` afterwards, if any.
        value_fingerprint: ``fingerprint()`` of the value.
    """

    secret_id: str
    arn: str
    version_id: str
    created: bool
    secret_created: bool
    previous_version_id: str | None
    value_fingerprint: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field, for evidence (no secret value in it)."""
        return asdict(self)


def request_token(incident_id: str, material_fingerprint: str) -> str:
    """The ``ClientRequestToken`` for writing ``material_fingerprint`` during
    ``incident_id``: a UUIDv5, stable across retries and processes.

    Raises:
        ConfigError: An argument is empty.
    """
    for field, value in (
        ("incident_id", incident_id),
        ("material_fingerprint", material_fingerprint),
    ):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{field}: must be a non-empty string")
    return str(uuid.uuid5(_TOKEN_NAMESPACE, f"{incident_id}\n{material_fingerprint}"))


def put_secret_version(
    client: Any, secret_id: str, value: str, *, client_request_token: str
) -> PutResult:
    """Writes ``value`` as the new ``AWSCURRENT`` version of ``secret_id``.

    The previous current version becomes ``AWSPREVIOUS``. The secret is created
    if absent. Check → apply → verify: an existing version with this token means
    a previous attempt already wrote it, and nothing is written again.

    Args:
        client: A boto3 ``secretsmanager`` client.
        secret_id: Secret name or ARN.
        value: The secret string (never logged; only its fingerprint).
        client_request_token: 32–64 characters, see :func:`request_token`.

    Returns:
        What was done, with version ids and the value's fingerprint.

    Raises:
        ConfigError: Bad argument, or the token was already used for a different
            value of this secret.
        CredentialsError: AWS refused the credentials or access.
        TransientError: Throttling, 5xx or connection failure (retryable).
        OperationFailed: The version is not staged ``AWSCURRENT`` after the write.
    """
    _require_id(secret_id)
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"value: the new value of secret {secret_id!r} must be a non-empty string"
        )
    token = client_request_token
    if not isinstance(token, str) or not 32 <= len(token) <= 64:
        raise ConfigError("client_request_token: must be a string of 32 to 64 characters")
    value_fp = fingerprint(value)

    secret_created = False
    versions = _versions_or_none(client, secret_id)
    if versions is None:
        try:
            _call(
                client.create_secret,
                secret_id,
                Name=secret_id,
                SecretString=value,
                ClientRequestToken=token,
            )
            secret_created = True
        except ConfigError as exc:
            if "ResourceExistsException" not in exc.detail:
                raise
            # Created concurrently (or by a crashed attempt): fall through to put.
        versions = _versions_or_none(client, secret_id) or []

    existing = {v.version_id: v for v in versions}
    created = secret_created
    if token in existing and not secret_created:
        # A previous attempt wrote this version. Make sure it holds THIS value: a
        # token reused for other material must not pass as "already done".
        stored = _call(client.get_secret_value, secret_id, SecretId=secret_id, VersionId=token).get(
            "SecretString"
        )
        if stored is None or fingerprint(stored) != value_fp:
            raise ConfigError(
                f"client_request_token: {token} was already used for a different value "
                f"of secret {secret_id!r}"
            )
    if token not in existing:
        _call(
            client.put_secret_value,
            secret_id,
            SecretId=secret_id,
            SecretString=value,
            ClientRequestToken=token,
        )
        created = True
        versions = describe_versions(client, secret_id)
        existing = {v.version_id: v for v in versions}

    mine = existing.get(token)
    if mine is None or CURRENT not in mine.stages:
        stages = list(mine.stages) if mine else "missing"
        raise OperationFailed(
            "put_secret_version",
            f"secret {secret_id!r}: version {token} is not staged {CURRENT} (stages: {stages})",
        )
    previous = next((v.version_id for v in versions if PREVIOUS in v.stages), None)
    arn = _call(client.describe_secret, secret_id, SecretId=secret_id)["ARN"]
    log.info(
        "secret %s: version %s %s (%s), previous %s",
        secret_id,
        token,
        "written" if created else "already present",
        value_fp,
        previous,
    )
    return PutResult(
        secret_id=secret_id,
        arn=arn,
        version_id=token,
        created=created,
        secret_created=secret_created,
        previous_version_id=previous,
        value_fingerprint=value_fp,
    )


def describe_versions(client: Any, secret_id: str) -> list[SecretVersion]:
    """All versions of ``secret_id`` (deprecated ones included), oldest first.

    Raises:
        ConfigError: The secret does not exist (or another client-side error).
        CredentialsError: Access refused.
        TransientError: Retryable service or connection failure.
    """
    _require_id(secret_id)
    # DescribeSecret first: it answers ResourceNotFoundException for a missing
    # secret on AWS and on moto, whereas moto 5.2.5 answers ListSecretVersionIds
    # for a missing secret with a 500 (KeyError in its backend) — which would look
    # transient and be retried forever.
    _call(client.describe_secret, secret_id, SecretId=secret_id)
    versions: list[SecretVersion] = []
    kwargs: dict[str, Any] = {"SecretId": secret_id, "IncludeDeprecated": True, "MaxResults": 100}
    while True:
        page = _call(client.list_secret_version_ids, secret_id, **kwargs)
        for v in page.get("Versions", []):
            versions.append(
                SecretVersion(
                    version_id=v["VersionId"],
                    stages=tuple(v.get("VersionStages", ())),
                    created=v.get("CreatedDate"),
                )
            )
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    return sorted(versions, key=lambda v: (v.created is None, v.created or datetime.min))


def get_secret_string(client: Any, secret_id: str, *, version_stage: str = CURRENT) -> SecretStr:
    """The secret's string value at ``version_stage``, masked.

    Raises:
        ConfigError: The secret or stage does not exist, or it holds binary only.
        CredentialsError: Access refused.
        TransientError: Retryable service or connection failure.
    """
    _require_id(secret_id)
    answer = _call(
        client.get_secret_value, secret_id, SecretId=secret_id, VersionStage=version_stage
    )
    if "SecretString" not in answer:
        raise ConfigError(
            f"secret {secret_id!r}: holds no SecretString (binary secrets unsupported)"
        )
    return SecretStr(answer["SecretString"])


def get_secret_json(client: Any, secret_id: str) -> Any:
    """The ``AWSCURRENT`` value parsed as JSON (e.g. a list of OAuth tokens).

    Raises:
        ConfigError: Not found, or the value is not JSON (the value is not quoted).
        CredentialsError: Access refused.
        TransientError: Retryable service or connection failure.
    """
    raw = get_secret_string(client, secret_id).get_secret_value()
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(f"secret {secret_id!r}: value is not valid JSON") from None


# -- internals -----------------------------------------------------------------------------


def _require_id(secret_id: object) -> None:
    if not isinstance(secret_id, str) or not secret_id.strip() or len(secret_id) > 2048:
        raise ConfigError("secret_id: must be a non-empty secret name or ARN")


def _versions_or_none(client: Any, secret_id: str) -> list[SecretVersion] | None:
    try:
        return describe_versions(client, secret_id)
    except ConfigError as exc:
        if "ResourceNotFoundException" in exc.detail:
            return None
        raise


def _call(method: Any, secret_id: str, **kwargs: Any) -> Any:
    """Calls a boto3 method and maps failures to ``core.errors`` classes.

    botocore's own messages can quote parameter values (ParamValidationError does),
    so only the operation, the secret id and the AWS error code/message are kept.
    """
    operation = getattr(method, "__name__", "call")
    try:
        return method(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        rid = meta.get("RequestId") or None
        message = str(error.get("Message", ""))
        detail = f"secret {secret_id!r}: {operation} failed: {code} ({message})" + (
            f" (request {rid})" if rid else ""
        )
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            raise TransientError(detail, request_id=rid) from None
        if code in _CREDENTIAL_CODES or status == 403:
            raise CredentialsError(detail, request_id=rid) from None
        if code in _CONFIG_CODES or 400 <= status < 500:
            raise ConfigError(detail, request_id=rid) from None
        raise McpIrError(detail, request_id=rid) from None
    except ParamValidationError:
        raise ConfigError(
            f"secret {secret_id!r}: {operation} rejected its parameters (botocore validation)"
        ) from None
    except NoCredentialsError:
        raise CredentialsError(
            f"secret {secret_id!r}: {operation}: no AWS credentials configured"
        ) from None
    except BotoConnectionError as exc:
        raise TransientError(
            f"secret {secret_id!r}: {operation}: cannot reach Secrets Manager "
            f"({type(exc).__name__})"
        ) from None
    except BotoCoreError as exc:
        raise McpIrError(
            f"secret {secret_id!r}: {operation} failed ({type(exc).__name__})"
        ) from None
