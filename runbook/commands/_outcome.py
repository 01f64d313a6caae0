"""How a finished run is told on the terminal, the same for every command that runs
one (``run``/``breach``, ``teardown``, ``drill``)."""

from __future__ import annotations

from typing import Any


def print_outcome(
    result: dict[str, Any], *, extra: tuple[str, str] = ("report", "report_path")
) -> None:
    """Prints the incident, its status (and detail) and evidence directory, then the
    ``extra`` line (label, result key) when the result has that key."""
    print(f"incident: {result['incident_id']}")
    print(
        f"status:   {result['status']}" + (f" ({result['detail']})" if result.get("detail") else "")
    )
    print(f"evidence: {result['evidence_dir']}")
    label, key = extra
    if result.get(key):
        print(f"{label + ':':<9} {result[key]}")
