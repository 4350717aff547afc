"""The import rule of DESIGN.md section 2: imports point down bus <- lifecycle_es <- projections <- replay."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"bus": 0, "lifecycle_es": 1, "projections": 2, "replay": 3}

FORBIDDEN = frozenset({"pickle", "dill", "cloudpickle", "shelve", "marshal"})


def _modules() -> list[Path]:
    return sorted(p for pkg in LAYERS for p in (ROOT / pkg).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def violations(path: Path) -> list[str]:
    """Return one line per import in `path` that breaks the layering or the no-pickle rule."""
    rel = path.relative_to(ROOT).as_posix()
    own = rel.split("/")[0]
    allowed = {name for name, level in LAYERS.items() if level <= LAYERS[own]}
    bad = []
    for lineno, name in _imports(path):
        top = name.split(".")[0]
        if top in LAYERS and top not in allowed:
            bad.append(f"{rel}:{lineno} imports {name}")
        if top in FORBIDDEN:
            bad.append(f"{rel}:{lineno} imports {name}, which the design forbids (no pickle)")
    return bad


def test_every_package_exists() -> None:
    """The four top-level packages of the fixed layout are all present."""
    assert all((ROOT / pkg / "__init__.py").is_file() for pkg in LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_point_down(path: Path) -> None:
    """No module imports a higher layer: every package imports only its own layer and those below."""
    assert violations(path) == []


def test_checker_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself flags a bus module importing lifecycle_es, so the rule cannot pass vacuously."""
    fake = ROOT / "bus" / "_layering_probe_tmp.py"
    fake.write_text("from lifecycle_es.events import Action\nimport pickle\n")
    try:
        assert violations(fake) == [
            "bus/_layering_probe_tmp.py:1 imports lifecycle_es.events",
            "bus/_layering_probe_tmp.py:2 imports pickle, which the design forbids (no pickle)",
        ]
    finally:
        fake.unlink()


def test_domain_module_may_not_import_projections() -> None:
    """A lifecycle_es module is refused the projections above it, whichever module it is."""
    probe = ROOT / "lifecycle_es" / "_layering_probe_tmp.py"
    probe.write_text("import bus\nfrom projections.moe import ModelSurgery\n")
    try:
        assert violations(probe) == ["lifecycle_es/_layering_probe_tmp.py:2 imports projections.moe"]
    finally:
        probe.unlink()
