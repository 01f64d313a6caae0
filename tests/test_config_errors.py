"""Bad inventory, bad playbooks, unknown targets, bad arguments: exit 2 and one line
that names the file, the target and the field."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from core.errors import PlaybookError
from runbook.cli import main
from runbook.inventory import load_inventory
from runbook.playbook import PLAYBOOK_DIR, available_playbooks, load_playbook
from tests.plugins.site import compose_target, run_text

GOOD_TARGET = compose_target("/srv/mcp/data")
PEOPLE = {"alice": {}, "bob": {}, "carol": {}, "dave": {}}
GROUPS = {"oncall": ["alice", "bob", "carol"], "security-leads": ["dave"]}


def write(tmp_path: Path, doc: object, name: str = "inventory.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t.pop("tunnel"), "target 'prod': field 'tunnel': Field required"),
        (
            lambda t: t["compose"].pop("project"),
            "target 'prod': field 'compose.project': Field required",
        ),
        (lambda t: t.update(kind="nomad"), "target 'prod': field 'kind'"),
        (lambda t: t["tunnel"].update(id="abc"), "target 'prod': field 'tunnel.id'"),
        (
            lambda t: t.update(colour="red"),
            "target 'prod': field 'colour': Extra inputs are not permitted",
        ),
        (
            lambda t: t["anthropic"]["credentials"].update(token="sk-ant-literal"),
            "field 'targets.prod.anthropic.credentials.token' holds a literal secret",
        ),
        (lambda t: t.pop("compose"), "kind 'compose' needs a 'compose' section"),
    ],
)
def test_inventory_errors_name_file_target_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate, expected
) -> None:  # noqa: ANN001
    target = yaml.safe_load(yaml.safe_dump(GOOD_TARGET))
    mutate(target)
    path = write(tmp_path, {"people": PEOPLE, "groups": GROUPS, "targets": {"prod": target}})
    code, err = run_cli(
        capsys, "--config", str(path), "plan", "breach-response", "--target", "prod"
    )
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and expected in err


def test_empty_group_and_unknown_person(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path, {"people": PEOPLE, "groups": {"oncall": []}, "targets": {"prod": GOOD_TARGET}}
    )
    code, err = run_cli(
        capsys, "--config", str(path), "plan", "breach-response", "--target", "prod"
    )
    assert code == 2 and "field 'groups.oncall': an approver group cannot be empty" in err
    path = write(
        tmp_path,
        {"people": PEOPLE, "groups": {"oncall": ["zed"]}, "targets": {"prod": GOOD_TARGET}},
    )
    code, err = run_cli(
        capsys, "--config", str(path), "plan", "breach-response", "--target", "prod"
    )
    assert code == 2 and "unknown person 'zed'" in err


def test_not_yaml_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "targets: [unclosed\n")
    code, err = run_cli(
        capsys, "--config", str(path), "plan", "breach-response", "--target", "prod"
    )
    assert code == 2 and "not valid YAML at line" in err
    code, err = run_cli(
        capsys, "--config", str(tmp_path / "nope.yaml"), "plan", "breach-response", "--target", "x"
    )
    assert code == 2 and "inventory file not found" in err


def test_unknown_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"people": PEOPLE, "groups": GROUPS, "targets": {"prod": GOOD_TARGET}})
    code, err = run_cli(capsys, "--config", str(path), "breach", "--target", "staging")
    assert code == 2 and err == "mcp-ir: error: unknown target 'staging' (known: prod)"


def test_bad_arguments_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["breach"],
        ["breach", "--target", "x", "--severity", "huge"],
        ["nonsense"],
        ["breach", "--target", "x", "--window-start", "yesterday"],
        ["breach", "--target", "x", "--trigger-json", "[1]"],
    ):
        code, err = run_cli(capsys, *args)
        assert code == 2, args
        assert len(err.splitlines()) == 1 and "error:" in err, err


def test_real_entry_point_exit_code(tmp_path: Path) -> None:
    proc = run_text(
        [sys.executable, "-m", "runbook.cli", "approve"],
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "the following arguments are required" in proc.stderr


def inventory(
    tmp_path: Path, sandbox: bool = False, groups: dict | None = None, drill: bool = False
):  # noqa: ANN201
    target = {**GOOD_TARGET, "sandbox": sandbox, "drill": drill}
    return load_inventory(
        write(tmp_path, {"people": PEOPLE, "groups": groups or GROUPS, "targets": {"prod": target}})
    )


@pytest.mark.parametrize("name", available_playbooks())
def test_every_playbook_renders_parses_and_checks(tmp_path: Path, name: str) -> None:
    drill = name == "rotation-drill"  # drills run as drills, unattended only on drill targets
    inv = inventory(tmp_path, drill=drill)
    contexts = (
        {"policy": "standard", "drill": drill},
        {
            "policy": "standard",
            "drill": drill,
            "trigger": {"kind": "alert", "severity": "critical", "auto_contain": True},
        },
    )
    for ctx in contexts:
        pb = load_playbook(name, inventory=inv, target="prod", context=ctx)
        assert pb.steps, name
        for spec in pb.steps:
            assert spec.auto or spec.approval.required >= 1
            if not spec.reversible and not drill:
                assert not spec.auto, f"{name}: irreversible {spec.key} must keep a human gate"
    pb = load_playbook(
        name,
        inventory=inventory(tmp_path, sandbox=True),
        target="prod",
        context={"policy": "auto-approve", "drill": drill},
    )
    assert all(s.auto for s in pb.steps)


def test_unattended_drill_needs_a_drill_target(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="for rotation drills, 'drill: true'"):
        load_playbook(
            "rotation-drill", inventory=inventory(tmp_path), target="prod", context={"drill": True}
        )
    pb = load_playbook(
        "rotation-drill",
        inventory=inventory(tmp_path, drill=True),
        target="prod",
        context={"drill": True},
    )
    assert pb.steps


def test_auto_approve_refused_on_production(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="'auto' is refused on an irreversible step"):
        load_playbook(
            "breach-response",
            inventory=inventory(tmp_path),
            target="prod",
            context={"policy": "auto-approve"},
        )


def _custom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    d = tmp_path / "pb"
    d.mkdir(exist_ok=True)
    (d / "custom.yaml").write_text(text)
    monkeypatch.setenv("MCP_IR_PLAYBOOK_DIR", str(d))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "steps:\n  - key: wipe_everything\n    approval: auto\n",
            "unknown step key 'wipe_everything'",
        ),
        (
            "steps:\n  - key: stop_stack\n    approval: {required: 1, group: oncall, timeout: 5x}\n",
            "field 'approval.timeout': bad duration '5x'",
        ),
        (
            "steps:\n  - key: stop_stack\n    approval: {required: 1, group: nobody, timeout: 5m}\n",
            "unknown approver group 'nobody'",
        ),
        (
            "steps:\n  - key: stop_stack\n    approval: {required: 4, group: oncall, timeout: 5m}\n",
            "4 approvers needed but group 'oncall' has only 3",
        ),
        (
            "steps:\n  - key: archive_tunnel\n    approval: auto\n",
            "'auto' is refused on an irreversible step",
        ),
        ("steps:\n  - key: stop_stack\n    approval: {{ undefined_thing.x }}\n", "template error"),
        ("steps:\n  - key: stop_stack\n    approval: {% if %}\n", "template error"),
        (
            "steps:\n  - key: stop_stack\n    approval: auto\n    retries: 3\n",
            "field 'retries': unknown field",
        ),
        ("steps:\n  - key: stop_stack\n", "field 'approval': required"),
        (
            "steps:\n  - key: stop_stack\n    approval: {required: 0, group: oncall, timeout: 5m}\n",
            "approval.required': must be an integer >= 1",
        ),
    ],
)
def test_playbook_errors_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    _custom(tmp_path, monkeypatch, text)
    with pytest.raises(
        PlaybookError, match=expected.replace("(", r"\(").replace("{", r"\{")
    ) as info:
        load_playbook("custom", inventory=inventory(tmp_path), target="prod")
    assert "custom.yaml" in info.value.detail


def test_bad_playbook_through_cli_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _custom(tmp_path, monkeypatch, "steps:\n  - key: nope\n    approval: auto\n")
    path = write(tmp_path, {"people": PEOPLE, "groups": GROUPS, "targets": {"prod": GOOD_TARGET}})
    code, err = run_cli(capsys, "--config", str(path), "run", "custom", "--target", "prod")
    assert code == 2 and "unknown step key 'nope'" in err and len(err.splitlines()) == 1


def test_playbooks_dir_is_the_repo_one() -> None:
    assert (PLAYBOOK_DIR / "breach-response.yaml").is_file()


def test_readme_inventory_example_is_valid() -> None:
    import re

    from runbook.inventory import parse_inventory

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"```yaml\n(people:.*?)```", readme, re.S)
    assert block, "the README's inventory reference example is missing"
    inv = parse_inventory(yaml.safe_load(block.group(1)), Path("README.md"))
    assert inv.targets["prod-eu"].upstream_servers[0].name == "crm"
