"""What a target driver is: the one place that knows how a kind of deployment is
captured, isolated, stopped, inspected, re-credentialed and restored.

Steps (``runbook/steps/``) never ask what kind a target is. They call
``ctx.driver`` — the :class:`TargetDriver` of the target's kind, found in the one
registry (:mod:`targets`) — and declare the capabilities they need (``Step.needs``);
the playbook check refuses a step whose target's driver lacks one, before anything
runs. Every method that would change something has a ``*_plan`` companion returning
a :class:`PlanPart`: the resources, the read-only calls and the mutating
:class:`~core.operations.Operation` list that the step's plan shows, hashes and the
run-time guard enforces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from core.errors import StepFailed
from core.operations import Operation
from tasks.credential_files import DATA_FILES

if TYPE_CHECKING:
    from runbook.context import StepContext

# Capability names (a step's ``needs`` and a driver's ``capabilities`` use these).
CAPTURE = "capture"  # logs, objects/inspect documents, config: evidence before destruction
ISOLATE = "isolate"  # cut the workload off the network while it is kept for capture
STOP = "stop"  # stop and remove the workload (containment)
REMAINING = "remaining"  # what of the workload and its credentials is still there
READ_CREDENTIALS = "read_credentials"  # the deployed tunnel credentials (values in memory)
WRITE_CREDENTIALS = "write_credentials"  # write new credentials and make the workload use them
REMOVE_CREDENTIALS = "remove_credentials"  # destroy the stored credentials (teardown)
RESTORE = "restore"  # start the workload again from what capture/stop kept
LOG_SOURCES = "log_sources"  # logs still reachable live, beyond what capture stored
SERVED_CERTIFICATE = "served_certificate"  # the server certificate the workload serves

ALL_CAPABILITIES = frozenset(
    {
        CAPTURE,
        ISOLATE,
        STOP,
        REMAINING,
        READ_CREDENTIALS,
        WRITE_CREDENTIALS,
        REMOVE_CREDENTIALS,
        RESTORE,
        LOG_SOURCES,
        SERVED_CERTIFICATE,
    }
)

#: The credential keys every driver reads and writes (FACTS §1 names, as in ``data/``).
CREDENTIAL_KEYS = DATA_FILES
#: The ones that are secret (registered with the trail's redactor when read); the
#: tunnel id, its domain and the certificates are not (evidence names them).
SECRET_KEYS = frozenset({"tunnel-token", "ca.key", "tls.key"})


@dataclass
class PlanPart:
    """A driver's share of a step's plan: what it would touch and how."""

    summary: str = ""
    resources: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Written:
    """What :meth:`TargetDriver.write_credentials` did: evidence (fingerprints only)
    and the downtime it caused, in seconds (0 for a hot reload or a rolling update)."""

    evidence: dict[str, Any]
    downtime_s: float = 0.0


def nothing_left(ctx: StepContext, left: list[str], after: str) -> None:
    """A driver's verify: fails the step while ``left`` (what ``after`` should have
    removed: containers, objects, credential files) is not empty."""
    if left:
        raise StepFailed(ctx.step, f"still present after {after}: {', '.join(left)}")


@runtime_checkable
class TargetDriver(Protocol):
    """One kind of deployment. Every method takes the step's context (target, trail,
    clients, guard). Methods raise the core errors (``StepFailed`` naming what failed,
    ``TransientError`` for 5xx/unreachable, ``ConfigError`` for bad input). A method
    that changes something records its evidence right after the change."""

    kind: str
    capabilities: frozenset[str]
    #: Whether the store keeps the CA key (material read back without it is incomplete).
    keeps_ca_key: bool
    #: How plans and evidence name the credential store (``data/``, ``kubernetes``).
    store_name: str

    def resources(self, ctx: StepContext) -> list[str]:
        """How plans name the deployment (``compose-project:x``, ``helm-release:ns/r``)."""
        ...

    # -- capture (CAPTURE) ----------------------------------------------------------------
    def capture_plan(self, ctx: StepContext, deadline_s: float) -> PlanPart: ...
    def capture(self, ctx: StepContext, deadline_s: float, have: set[str]) -> dict[str, Any]:
        """Stores what would be lost as artifacts (subjects in ``have`` are skipped)."""
        ...

    # -- stop (STOP; isolation first where the kind can ISOLATE) --------------------------
    def stop_plan(self, ctx: StepContext) -> PlanPart: ...
    def stopped_reason(self, ctx: StepContext) -> str | None: ...
    def stop(self, ctx: StepContext) -> dict[str, Any]: ...
    def verify_stopped(self, ctx: StepContext) -> dict[str, Any]: ...

    # -- what remains (REMAINING) ---------------------------------------------------------
    def remaining(self, ctx: StepContext) -> list[str]: ...
    def teardown_leftovers(self, ctx: StepContext) -> tuple[list[str], dict[str, Any]]:
        """(problems, what was found): workload and credential material still there."""
        ...

    # -- credentials (READ_CREDENTIALS, WRITE_CREDENTIALS, SERVED_CERTIFICATE) ------------
    def read_credentials(self, ctx: StepContext) -> dict[str, str]:
        """The deployed values (``CREDENTIAL_KEYS`` present), in memory only."""
        ...

    def require_credentials(self, ctx: StepContext, *keys: str) -> dict[str, str]: ...
    def ca_key(self, ctx: StepContext, values: dict[str, str]) -> tuple[str, str]:
        """The current CA's key and where it came from."""
        ...

    def credential_source(self, ctx: StepContext, key: str) -> str:
        """Where a key lives, for messages (``data/ca.crt``)."""
        ...

    def credential_problems(self, ctx: StepContext) -> list[str]: ...
    def write_credentials_plan(self, ctx: StepContext, keys: tuple[str, ...]) -> PlanPart: ...
    def write_credentials(self, ctx: StepContext, values: dict[str, str]) -> Written:
        """Writes ``values`` (other keys kept) and redeploys them."""
        ...

    def store_rotated_plan(self, ctx: StepContext) -> PlanPart: ...
    def store_rotated(self, ctx: StepContext, values: dict[str, str]) -> tuple[str, dict[str, Any]]:
        """Rotation's store of a whole new credential set; (outcome key, evidence)."""
        ...

    def deployed_token_fingerprints(self, ctx: StepContext) -> dict[str, str | None]: ...
    def served_certificates(self, ctx: StepContext) -> dict[str, str]: ...
    def running(self, ctx: StepContext) -> Any:
        """Raises ``StepFailed`` unless the workload runs (waits a little)."""
        ...

    # -- remove credentials (REMOVE_CREDENTIALS) ------------------------------------------
    def remove_credentials_plan(self, ctx: StepContext) -> PlanPart: ...
    def credentials_left(self, ctx: StepContext) -> list[str]: ...
    def credentials_removed_reason(self, ctx: StepContext) -> str | None: ...
    def remove_credentials(self, ctx: StepContext) -> dict[str, Any]: ...
    def verify_credentials_removed(self, ctx: StepContext) -> dict[str, Any]: ...

    # -- restore (RESTORE) ----------------------------------------------------------------
    def restore_plan(self, ctx: StepContext) -> PlanPart: ...
    def restored_reason(self, ctx: StepContext) -> str | None: ...
    def restore(self, ctx: StepContext) -> dict[str, Any]: ...
    def verify_restored(self, ctx: StepContext) -> dict[str, Any]: ...

    # -- logs (LOG_SOURCES) ---------------------------------------------------------------
    def log_sources_plan(self, ctx: StepContext) -> PlanPart: ...
    def live_logs(self, ctx: StepContext) -> list[LiveLog]: ...


@dataclass(frozen=True)
class LiveLog:
    """A log the driver can still read live: ``name`` (as capture named its artifact)
    and ``collect(window, scratch, name)`` returning a ``tasks.logs.CollectedArtifact``."""

    name: str
    collect: Any
