"""The packages read bottom to top: each layer imports only the layers below it (and itself),
no import circle exists (function-local imports included), and below the operator layer no
function-local import of the project's own modules hides a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cryptoflow", "ingestion", "expectations", "pipelines")

# Bottom to top: a module may import its own layer and those listed before it.
LAYERS = (
    ("ground", ("cryptoflow.core",)),
    ("stages", ("ingestion", "expectations", "pipelines")),
    (
        "operator",
        (
            "cryptoflow.provision",
            "cryptoflow.supervisor",
            "cryptoflow.dashboard",
            "cryptoflow.console",
        ),
    ),
    ("commands", ("cryptoflow.cli", "cryptoflow.__main__")),
)
# Layers whose modules may import lazily (so `cryptoflow --help` does not load Spark).
LAZY_IMPORTS_ALLOWED = {"operator", "commands"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """(project module imported, whether inside a function or class, line) of one file."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            names = [n if n in MODULES else node.module for n in names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                out.append((_resolve(name), node.col_offset > 0, node.lineno))
    return out


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in {__file__}")


GRAPH = {m: _imports(p) for m, p in MODULES.items() if m != "cryptoflow"}


def test_every_module_has_a_layer_and_the_package_root_imports_nothing():
    for module in GRAPH:
        layer_of(module)
    assert _imports(MODULES["cryptoflow"]) == []


def test_no_module_imports_a_layer_above_its_own():
    wrong = [
        f"{m}:{line} imports {target} ({LAYERS[layer_of(target)][0]} above "
        f"{LAYERS[layer_of(m)][0]})"
        for m, imports in GRAPH.items()
        for target, _, line in imports
        if target != "cryptoflow" and layer_of(target) > layer_of(m)
    ]
    assert wrong == []


def test_function_local_imports_only_where_loading_is_lazy_on_purpose():
    local = [
        f"{m}:{line} imports {target} inside a function"
        for m, imports in GRAPH.items()
        for target, inside, line in imports
        if inside and LAYERS[layer_of(m)][0] not in LAZY_IMPORTS_ALLOWED
    ]
    assert local == []


def test_no_import_circle():
    edges = {m: {t for t, _, _ in imports if t != m and t in GRAPH} for m, imports in GRAPH.items()}
    circles = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []
