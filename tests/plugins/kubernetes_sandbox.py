"""The sandbox Kubernetes API, served over HTTP, with a seeded Helm release.

``k8s`` gives each test a fresh cluster (state is mutated by every step), a kubeconfig
for it and an ``ApiClient`` loaded from that kubeconfig by the adapter's own loader —
so tests drive the real ``kubernetes`` client over HTTP exactly as production does.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from sandbox.helm_release import SeededRelease
from sandbox.k8s_cluster import Cluster
from sandbox.kubernetes_api import SandboxCluster, serve_sandbox


@dataclass
class K8sSandbox:
    """A running sandbox cluster: ``api`` is a real ApiClient pointed at it."""

    served: SandboxCluster
    api: client.ApiClient
    namespace: str = "mcp-tunnel"
    release: str = "mcp-tunnel"

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def verify(self) -> ssl.SSLContext:
        """Trusts the sandbox's CA (it serves HTTPS, as an apiserver does)."""
        return self.served.tls.client_context()

    @property
    def cluster(self) -> Cluster:
        return self.served.cluster

    @property
    def kubeconfig(self) -> Path:
        return self.served.kubeconfig

    @property
    def seeded(self) -> SeededRelease:
        return self.served.seeded

    def stop(self) -> None:
        self.api.close()
        self.served.stop()

    def calls(self) -> list[dict[str, Any]]:
        """Mutating calls the server received, in order."""
        return httpx.get(f"{self.url}/_sandbox/calls", verify=self.verify).json()["calls"]

    def faults(self, **spec: Any) -> None:
        """``deny=[{verb, resource, name?}]`` and/or ``fail_next={count, verb?, resource?}``."""
        httpx.post(f"{self.url}/_sandbox/faults", json=spec, verify=self.verify).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.url}/_sandbox/faults", verify=self.verify).raise_for_status()


def start_sandbox(tmp_path: Path, **seed: Any) -> K8sSandbox:
    """A fresh seeded sandbox; fast kubelet (pods Ready / gone after 0.2 s)."""
    from tasks.kubernetes import load_client

    served = serve_sandbox(
        tmp_path / "kubeconfig", cluster=Cluster(ready_delay_s=0.2, exit_after_s=0.2), **seed
    )
    return K8sSandbox(served=served, api=load_client(str(served.kubeconfig), None))


@pytest.fixture
def k8s(tmp_path: Path) -> Iterator[K8sSandbox]:
    """A fresh sandbox cluster with the mcp-tunnel release installed (gzip payloads)."""
    box = start_sandbox(tmp_path, canary="sk-ant-api03-canaryCANARYcanary")
    yield box
    box.stop()
