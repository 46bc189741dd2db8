"""components/ and pipelines/ install as autophagy.components / autophagy.pipelines.

pyproject.toml maps the two folders into the package with ``package-dir``, which needs an
explicit package list: a library subpackage missing from it would work in the editable
install (the finder maps whole folders) and vanish from the wheel and the Docker image.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent


def test_package_list_covers_every_package():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {"": "src", "autophagy.components": "components", "autophagy.pipelines": "pipelines"}
    expected = set(find_packages(str(ROOT / "src"))) | {"autophagy.components", "autophagy.pipelines"}
    assert set(tool["packages"]) == expected
    for folder in ("components", "pipelines"):
        assert (ROOT / folder / "__init__.py").is_file()
        assert not find_packages(str(ROOT / folder)), f"{folder}/ has subpackages: list them in pyproject.toml"


def test_installed_packages_import():
    import importlib

    for name in (
        "autophagy.components.runtime",
        "autophagy.components.image",
        "autophagy.components.ops",
        "autophagy.pipelines.cluster",
        "autophagy.pipelines.pipeline",
        "autophagy.pipelines.client",
    ):
        module = importlib.import_module(name)
        assert Path(module.__file__).name == name.rsplit(".", 1)[1] + ".py"
