"""What a non-editable install and the flow-run image carry: every package the project
declares, and every file its code reads beside the modules (templates, manifests).

The image (deploy/kubernetes/Containerfile) runs ``pip install .``: a package missing
from its COPY lines, or a template missing from package-data, installs fine and fails
only when a run renders its first report.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from tests.plugins.site import run_text

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _packages() -> list[str]:
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(p.rstrip("*") for p in include)


def test_every_top_level_package_with_code_is_declared() -> None:
    tops = {
        p.parent.name
        for p in ROOT.glob("*/__init__.py")
        if p.parent.name not in ("tests", "benchmarks", "scripts")
    }
    assert tops == set(_packages())


def test_the_image_copies_every_declared_package() -> None:
    lines = (ROOT / "deploy/kubernetes/Containerfile").read_text().splitlines()
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    missing = [p for p in _packages() if p not in copied]
    assert missing == [], f"deploy/kubernetes/Containerfile does not COPY {missing}"


def test_every_data_file_of_a_package_is_package_data() -> None:
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    tracked = run_text(["git", "ls-files", *_packages()], cwd=ROOT, check=True).stdout.split()
    missing = []
    for name in tracked:
        if name.endswith(".py"):
            continue
        package, _, rest = name.partition("/")
        if not any(fnmatch.fnmatch(rest, glob) for glob in data.get(package, [])):
            missing.append(name)
    assert missing == [], f"not in [tool.setuptools.package-data]: {missing}"
