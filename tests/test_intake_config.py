"""Intake configuration from the inventory: validation errors name the field, secrets
come from the environment and never show in a repr."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.errors import ConfigError, CredentialsError
from intake.alerts_cli import list_alerts, store_path
from intake.app import create_app
from intake.config import load_intake, parse_intake_config
from intake.models import Severity
from runbook.settings import Settings
from tests.plugins.intake import SECRETS, SOURCES, RecordingLauncher, write_inventory


def settings_for(tmp_path, intake):
    return Settings(config_path=write_inventory(tmp_path, intake), evidence_dir=tmp_path / "ev")


def test_defaults_and_store_location(tmp_path, intake_secrets):
    runtime = load_intake(settings_for(tmp_path, {"sources": SOURCES}))
    config = runtime.config
    assert config.dedup_window == timedelta(hours=1)
    assert config.auto_contain_at is Severity.high
    assert config.max_body_bytes == 256 * 1024
    assert runtime.store_path == tmp_path / "ev" / "_intake" / "alerts.sqlite"
    assert config.sources["splunk-prod"].auth == "hmac"
    assert config.sources["token-src"].auth == "bearer"
    assert config.sources["generic-src"].rules[0].window_before == timedelta(hours=2)
    assert len(runtime.secrets["generic-src"].values) == 2


def test_secret_values_never_in_repr(tmp_path, intake_secrets):
    runtime = load_intake(settings_for(tmp_path, {"sources": SOURCES}))
    shown = repr(runtime)
    for value in SECRETS.values():
        assert value not in shown
    assert "sha256:" in repr(runtime.secrets["generic-src"])


def test_missing_secret_variable_is_named(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("INTAKE_SPLUNK_SECRET")
    with pytest.raises(CredentialsError) as err:
        load_intake(settings_for(tmp_path, {"sources": SOURCES}))
    assert "INTAKE_SPLUNK_SECRET" in err.value.detail
    assert "intake.sources.splunk-prod.secrets_env" in err.value.detail
    # The server refuses to start rather than accept alerts it cannot authenticate.
    with pytest.raises(CredentialsError):
        create_app(
            settings_for(tmp_path, {"sources": SOURCES}),
            launcher=RecordingLauncher(tmp_path / "l.sqlite"),
        )


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"sources": {"s": {"format": "qradar", "secrets_env": ["A"]}}}, "intake.sources.s.format"),
        (
            {"sources": {"s": {"format": "generic", "secrets_env": []}}},
            "intake.sources.s.secrets_env",
        ),
        (
            {"sources": {"s": {"format": "generic", "secrets_env": ["A"], "auth": "basic"}}},
            "intake.sources.s.auth",
        ),
        ({"dedup_window": "soon"}, "intake.dedup_window"),
        ({"auto_contain_at": "severe"}, "intake.auto_contain_at"),
        (
            {
                "sources": {
                    "s": {
                        "format": "generic",
                        "secrets_env": ["A"],
                        "rules": [{"match": {"colour": "x"}, "target": "prod-eu"}],
                    }
                }
            },
            "intake.sources.s.rules.0.match",
        ),
        (
            {
                "sources": {
                    "s": {"format": "generic", "secrets_env": ["A"], "rules": [{"target": "mars"}]}
                }
            },
            "intake.sources.s.rules.0.target",
        ),
        ({"sources": {"s p": {"format": "generic", "secrets_env": ["A"]}}}, "intake.sources"),
        ({"shared_secret": "x"}, "intake.shared_secret"),
    ],
)
def test_invalid_section_names_the_field(section, expected):
    with pytest.raises(ConfigError) as err:
        parse_intake_config(section, known_targets=["prod-eu", "staging"])
    assert expected in err.value.detail


def test_list_alerts_needs_no_secrets_and_starts_empty(tmp_path, monkeypatch):
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    settings = settings_for(tmp_path, {"sources": SOURCES, "store": str(tmp_path / "s.db")})
    assert store_path(settings) == tmp_path / "s.db"
    assert list_alerts(settings) == []
    assert list_alerts(settings, dead_letter=True) == []
