"""The package layout is the architecture: each subpackage imports only the layers below it
(imports under ``if TYPE_CHECKING:`` do not run and are left out), so no two import each
other. See docs/architecture.md for what each layer holds."""

from __future__ import annotations

import ast
from pathlib import Path

import dockyard

PACKAGE = Path(dockyard.__file__).parent
BASE = {"errors", "home", "names", "units", "events", "collector", "terminal", "lifecycles"}
BASE |= {"interrupts"}

# what each subpackage may import of dockyard, beside the base modules
BELOW: dict[str, set[str]] = {
    "spec": set(),
    "disk": set(),
    "agent": {"disk"},
    "state": {"disk"},  # (and the lifecycles, a base module: the states it may hold)
    "runtime": set(),
    "images": {"spec", "runtime", "disk"},
    "planning": {"spec", "runtime"},
    "execution": {"spec", "planning", "runtime", "images", "state", "disk"},
    "report": {"spec", "planning", "state"},
    "backends": {"spec", "planning", "runtime", "images", "state", "disk", "agent", "execution"},
}
BELOW["cwl"] = {"spec", "planning", "runtime", "images", "state", "disk", "execution", "report"}
BELOW["cwl"] |= {"backends"}
BELOW["cli"] = set(BELOW) - {"agent"}  # (the command line reaches agents through backends)
BELOW["testing"] = set(BELOW) - {"cli", "report"}
# the node agent's layer holds only these base modules (its image ships nothing more)
AGENT_BASE = {"errors", "home", "names", "lifecycles"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name.startswith("dockyard.")}


def _target(module: str) -> str:
    """The subpackage or base module an import reaches (``dockyard.disk.safefs`` -> disk)."""
    return module.split(".")[1]


def _edges() -> dict[str, dict[str, set[str]]]:
    """subpackage -> what it imports of dockyard outside itself -> the modules that do."""
    edges: dict[str, dict[str, set[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) < 2:
            continue
        source = rel.parts[0]
        for module in _imports(path):
            target = _target(module)
            if target != source and target != "__version__":
                edges.setdefault(source, {}).setdefault(target, set()).add(str(rel))
    return edges


def test_every_subpackage_imports_only_the_layers_below_it() -> None:
    wrong = {
        f"{source} -> {target} (in {', '.join(sorted(where))})"
        for source, targets in _edges().items()
        for target, where in targets.items()
        if target not in BELOW.get(source, set()) | BASE
    }
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_every_subpackage_has_a_place_in_the_layers() -> None:
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages == set(BELOW), "a new subpackage needs its row in BELOW"


def test_the_layers_have_no_cycle() -> None:
    """(BELOW itself: a package never sits below one it may import.)"""
    seen: dict[str, int] = {}

    def depth(name: str, path: tuple[str, ...] = ()) -> int:
        assert name not in path, f"cycle: {' -> '.join((*path, name))}"
        if name not in seen:
            seen[name] = 1 + max((depth(d, (*path, name)) for d in BELOW[name]), default=0)
        return seen[name]

    for name in BELOW:
        depth(name)


def test_the_node_disk_layer_and_the_agent_use_only_the_base_they_ship_with() -> None:
    edges = _edges()
    for layer in ("disk", "agent"):
        base = {t for t in edges.get(layer, {}) if t in BASE}
        assert base <= AGENT_BASE, f"{layer} imports {sorted(base - AGENT_BASE)}"


def test_the_base_modules_import_only_each_other() -> None:
    for name in BASE:
        targets = {_target(module) for module in _imports(PACKAGE / f"{name}.py")}
        assert targets <= BASE, f"{name}.py imports {sorted(targets - BASE)}"
