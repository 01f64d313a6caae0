"""Target drivers: one registry, one protocol, capabilities checked before a run, and
no step that asks what kind its target is."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import pytest

from core.errors import PlaybookError
from runbook.context import StepContext
from runbook.inventory import load_inventory
from runbook.playbook import load_playbook
from runbook.registry import Plan, Step, load_steps, register
from sandbox.site import write_inventory
from targets import DRIVERS, base, driver_for
from targets.base import TargetDriver

STEPS_DIR = Path(__file__).resolve().parent.parent / "runbook" / "steps"


def test_every_registered_kind_has_a_driver_implementing_the_protocol() -> None:
    assert set(DRIVERS) == {"compose", "helm"}
    for kind in DRIVERS:
        driver = driver_for(kind)
        assert isinstance(driver, TargetDriver), kind
        assert driver.kind == kind
        assert driver.capabilities <= base.ALL_CAPABILITIES
    # Both kinds do everything the shipped steps need.
    shipped = [cls for key, cls in load_steps().items() if not key.startswith("test_")]
    needed = frozenset().union(*(cls.needs for cls in shipped))
    assert needed <= driver_for("compose").capabilities
    assert needed <= driver_for("helm").capabilities
    assert base.ISOLATE not in driver_for("compose").capabilities


@register
class _NeedsIsolation(Step):
    """A step only kinds that can isolate support (declared here, registered through the
    same decorator as the shipped steps)."""

    key = "test_needs_isolation"
    reversible = True
    needs: ClassVar[frozenset[str]] = frozenset({base.ISOLATE, base.STOP})

    def plan(self, ctx: StepContext) -> Plan:
        return Plan(step=self.key, target=ctx.incident.target, summary="probe")

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        return {}


def test_playbook_check_refuses_a_step_the_targets_driver_cannot_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "isolate-only.yaml").write_text(
        "name: isolate-only\nsteps:\n  - key: test_needs_isolation\n    approval: auto\n"
    )
    monkeypatch.setenv("MCP_IR_PLAYBOOK_DIR", str(playbooks))
    common = {
        "sandbox": True,
        "tunnel": {"id": "tnl_x"},
        "anthropic": {"credentials": {"bearer_env": "MCP_IR_UNUSED"}},
    }
    inventory = load_inventory(
        write_inventory(
            tmp_path / "inventory.yaml",
            {
                "box": {**common, "kind": "compose", "compose": {"project": "p", "data_dir": "/d"}},
                "k8s": {**common, "kind": "helm", "helm": {}},
            },
        )
    )
    with pytest.raises(PlaybookError) as err:
        load_playbook("isolate-only", inventory=inventory, target="box")
    detail = err.value.detail
    assert "step 1 (test_needs_isolation)" in detail
    assert "target 'box'" in detail and "'compose'" in detail
    assert "lacks the capability the step needs: isolate" in detail
    assert load_playbook("isolate-only", inventory=inventory, target="k8s").steps[0].key == (
        "test_needs_isolation"
    )


_KIND_BRANCH = re.compile(
    r"""(target\.kind|\.kind\s*(==|!=|in)\s*[\[("']*(compose|helm)|is_helm|"""
    r"""ctx\.target\.(helm|compose)\b)"""
)


def test_no_step_module_branches_on_the_target_kind() -> None:
    offending = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(STEPS_DIR.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if _KIND_BRANCH.search(line)
    ]
    assert offending == []
