"""A Helm sandbox site for end-to-end tests: the sandbox Kubernetes API (served over
HTTP in this process, driven by the CLI subprocess through its kubeconfig) with the
mcp-tunnel release installed on a tunnel of the session's Anthropic sandbox, and an
inventory describing it — built by the same code as ``mcp-ir demo --kind helm``
(sandbox/site.py). The CLI helpers are the Compose site's (tests/plugins/site.py).

By default runs use a playbook of only the steps that work on Helm today
(capture_evidence, stop_stack, archive_tunnel; ``MCP_IR_PLAYBOOK_DIR``), so these tests
do not depend on steps other people are still writing.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.k8s_cluster import Cluster
from sandbox.site import HelmSite, provision_helm_site
from tests.plugins.site import Site, canary_inventory, fresh_site, run_env

HELM_PLAYBOOK = """\
name: {name}
description: breach-response, limited to the steps under test on Helm
steps:
  - key: capture_evidence
    approval: auto
    auto_reason: "read-only"
    timeout: 30s
    params: {{deadline_s: 5}}
  - key: stop_stack
{stop_gate}
    timeout: 60s
  - key: archive_tunnel
{archive_gate}
    timeout: 60s
"""

AUTO = "    approval: auto\n    auto_reason: sandbox"
GATED = "    approval: {required: 1, group: oncall, timeout: 5m, allow_initiator: true}"


@dataclass
class HelmTestSite(Site):
    """A :class:`Site` whose ``site`` is a :class:`HelmSite`; ``k8s_calls`` and
    ``k8s_faults`` talk to the sandbox cluster's test controls over HTTP."""

    @property
    def helm(self) -> HelmSite:
        return self.site  # type: ignore[return-value]

    @property
    def k8s_url(self) -> str:
        return self.helm.served.url

    @property
    def k8s_verify(self) -> ssl.SSLContext:
        return self.helm.served.tls.client_context()

    def k8s_calls(self) -> list[dict[str, Any]]:
        return httpx.get(
            f"{self.k8s_url}/_sandbox/calls", timeout=10, verify=self.k8s_verify
        ).json()["calls"]

    def k8s_faults(self, **spec: Any) -> None:
        httpx.post(
            f"{self.k8s_url}/_sandbox/faults", json=spec, timeout=10, verify=self.k8s_verify
        ).raise_for_status()

    def clear_k8s_faults(self) -> None:
        httpx.delete(
            f"{self.k8s_url}/_sandbox/faults", timeout=10, verify=self.k8s_verify
        ).raise_for_status()


def write_playbooks(directory: Path) -> Path:
    """``helm-breach`` (auto gates) and ``helm-breach-gated`` (stop_stack needs one
    approval from oncall) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "helm-breach.yaml").write_text(
        HELM_PLAYBOOK.format(name="helm-breach", stop_gate=AUTO, archive_gate=AUTO)
    )
    (directory / "helm-breach-gated.yaml").write_text(
        HELM_PLAYBOOK.format(name="helm-breach-gated", stop_gate=GATED, archive_gate=AUTO)
    )
    return directory


@pytest.fixture
def helm_site(
    tmp_path: Path, anthropic_sandbox: Any, prefect_server: Any
) -> Iterator[HelmTestSite]:
    fresh = fresh_site(tmp_path, anthropic_sandbox, "helm")
    canary = fresh["canary"]
    site = provision_helm_site(cluster=Cluster(ready_delay_s=0.2, exit_after_s=0.2), **fresh)
    inventory = canary_inventory(tmp_path, fresh["name"], site.target)
    playbooks = str(write_playbooks(tmp_path / "playbooks"))
    env = run_env(anthropic_sandbox, canary, prefect_server, MCP_IR_PLAYBOOK_DIR=playbooks)
    env.pop("KUBECONFIG", None)
    env.pop("MCP_IR_FAILPOINT", None)
    s = HelmTestSite(site, inventory, tmp_path / "evidence", env, canary, anthropic_sandbox, None)  # type: ignore[arg-type]
    try:
        yield s
    finally:
        s.kill_procs()
        site.served.stop()
