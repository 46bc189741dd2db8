"""The source a command runs, as paths a DVC stage depends on (``dvc.yaml``'s code ``deps``).

:func:`imported_modules` follows a module's imports through one package's source tree, statically
(``ast``, nothing is imported): every ``import`` and ``from ... import`` anywhere in a module, also
those inside functions (imported on first use). :func:`code_deps` turns them into paths: a
subpackage as its directory, so that every module in it is covered, also those imported by name at
run time (the registries' ``"autophagy.models.edm:EDMModel"``) and those added later, and a
top-level module as its file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path


class SourceError(ValueError):
    """A module named as an entry point is not in the source tree."""


def module_file(src: Path, module: str) -> Path | None:
    """``src/a/b.py`` or ``src/a/b/__init__.py`` for module ``a.b``; None if neither exists."""
    base = src.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(tree: ast.AST, module: str, is_package: bool, package: str) -> set[str]:
    """Every name of ``package`` that ``tree`` (the source of ``module``) imports, modules or not."""
    here = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return {name for name in names if name == package or name.startswith(package + ".")}


def imported_modules(src: Path, entries: Iterable[str]) -> set[str]:
    """The modules of the package under ``src`` that running ``entries`` may import: the entries,
    what they import, transitively, and every package above each (its ``__init__`` runs first)."""
    entries = list(entries)
    package = entries[0].split(".")[0]
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = module_file(src, module)
        if path is None:
            if module in entries:
                raise SourceError(f"module {module} is not in {src}")
            continue  # `from pkg import name` where name is not a module
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += _imports(ast.parse(path.read_text(), str(path)), module, path.name == "__init__.py", package)
    return seen


def code_deps(project: Path, src: str, entries: Iterable[str]) -> list[str]:
    """The paths, relative to ``project``, that running ``entries`` depends on: ``src/<pkg>/<sub>``
    for each subpackage it imports from, ``src/<pkg>/<module>.py`` for each top-level module."""
    root = project / src
    paths = set()
    for module in imported_modules(root, entries):
        parts = module.split(".")
        if len(parts) > 2 or (len(parts) == 2 and (root / parts[0] / parts[1]).is_dir()):
            paths.add(f"{src}/{parts[0]}/{parts[1]}")
        else:
            paths.add(module_file(root, module).relative_to(project).as_posix())
    return sorted(paths)
