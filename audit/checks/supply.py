"""Check of the images: every one pinned by SHA-256 digest."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from audit.checks._common import result
from audit.context import AuditContext
from audit.model import CheckResult, Evidence

if TYPE_CHECKING:
    from audit.checks import CheckSpec

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_digest(ctx: AuditContext, spec: CheckSpec) -> CheckResult:
    got = ctx.facts.images()
    evidence = [Evidence(f"{got.source}: {ref.where}", ref.reference) for ref in got.value]
    unpinned = [ref.reference for ref in got.value if not DIGEST.search(ref.reference)]
    if unpinned:
        return result(
            spec, "fail", evidence, f"not pinned by digest: {', '.join(sorted(set(unpinned)))}"
        )
    return result(spec, "pass", evidence)
