"""Session fixtures live in tests/plugins/, one module per real component; every
module there is loaded as a pytest plugin."""

import pkgutil
from pathlib import Path

import pytest

# The plugins import each other: rewrite their asserts whichever is imported first.
pytest.register_assert_rewrite("tests.plugins")

pytest_plugins = [
    f"tests.plugins.{m.name}"
    for m in pkgutil.iter_modules([str(Path(__file__).parent / "plugins")])
]
