"""Reading a YAML file the user wrote (the inventory, a deployment's compose file or
proxy config), with one wording for what can go wrong: missing, unreadable, or not
YAML (with the line)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: Path, what: str, error: Callable[[str], Exception]) -> Any:
    """``path`` parsed as YAML; ``what`` names the file in messages.

    Raises:
        Exception: ``error(message)`` when the file is missing, cannot be read or is
            not valid YAML (the message names the file and, for YAML, the line).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise error(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
