"""docs/architecture.md's claims about the code, checked from the code: imports point down the layers
only, no module imports itself back through others, and no function grows past 80 lines or 12 parameters.

The import graph is read with ``ast`` (function-level imports included), so a lazy import that climbs a
layer is caught as well as a top-level one."""

import ast
import collections
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "mia_core"

#: a package or top-level module of mia_core -> its layer; an import must point to a lower layer or
#: stay inside its own package (docs/architecture.md, "Layers")
LAYERS = {
    "mia_core": 0, "errors": 0, "types": 0, "redact": 0, "progress": 0, "token_rows": 0, "text_table": 0,
    "formatting": 0, "hookspecs": 0, "matching": 0, "labels": 0, "option_schema": 0,
    "formats": 1,
    "registry": 2, "plugins": 2, "defaults": 2, "path_choice": 2, "data_parallel": 2,
    "divergence": 3,
    "extraction": 4, "scoring": 4, "attack": 4, "inspection": 4,
    "setlevel": 5,
    "report": 6, "calibrate": 6,
    "study": 7,
    "cli": 8,
}
#: layers of single modules, which may import one another (the cycle check still applies to them)
SHARED_LAYERS = {0, 2}
MAX_LINES, MAX_PARAMETERS = 80, 12


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(CORE.parent).with_suffix("").parts
        is_package = path.name == "__init__.py"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _imports(name: str, path: Path, is_package: bool, modules: dict) -> list[tuple[str, int]]:
    """(imported mia_core module, line) of every import in the file; ``from X import sub`` names X.sub."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join([*base, node.module] if node.module else base) if node.level else node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            found += [(t, node.lineno) for t in subs or [target]]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return [(t, line) for t, line in found if t.split(".")[0] == "mia_core"]


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mia_core"


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = collections.defaultdict(set)
    upward = []
    for name, (path, is_package) in modules.items():
        for target, line in _imports(name, path, is_package, modules):
            if target != name:
                graph[name].add(target)
            source, dest = _group(name), _group(target)
            if source == dest or dest == "mia_core":
                continue
            a, b = LAYERS.get(source), LAYERS.get(dest)
            where = f"{path.relative_to(CORE.parent)}:{line}"
            if a is None or b is None:
                upward.append(f"{where}: {source if a is None else dest} has no layer in LAYERS")
            elif b > a or (a == b and a not in SHARED_LAYERS):
                upward.append(f"{where}: {source} (layer {a}) imports {target} (layer {b})")
    return graph, upward


def test_every_layer_is_declared_and_imports_point_down():
    _, upward = _graph()
    assert not upward, "imports that do not point down the layers:\n" + "\n".join(upward)


def test_no_import_cycle():
    """Strongly connected components of the module graph (a package's ``__init__`` re-exporting its own
    modules is not a cycle)."""
    graph, _ = _graph()
    modules = _modules()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in modules or modules[w][1] and v.startswith(w + "."):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(" <-> ".join(sorted(component)))

    for v in modules:
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _functions() -> list[tuple[str, int, int]]:
    out = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
                if params and params[0].arg in ("self", "cls"):
                    params = params[1:]
                where = f"{path.relative_to(CORE.parent)}:{node.lineno} {node.name}"
                out.append((where, node.end_lineno - node.lineno + 1, len(params)))
    return out


def test_no_function_over_80_lines_or_12_parameters():
    too_big = [f"{where}: {lines} lines, {params} parameters" for where, lines, params in _functions()
               if lines > MAX_LINES or params > MAX_PARAMETERS]
    assert not too_big, "functions to split (or to give a request object):\n" + "\n".join(too_big)


@pytest.mark.parametrize("source, target, allowed", [
    ("cli", "report", True), ("report", "scoring", True), ("scoring", "attack", False),
    ("extraction", "scoring", False), ("formats", "registry", False), ("errors", "types", True),
])
def test_the_layer_rule_itself(source, target, allowed):
    """The rule the tests above apply, on the cases docs/architecture.md names."""
    a, b = LAYERS[source], LAYERS[target]
    assert (b < a or (a == b and a in SHARED_LAYERS)) is allowed


def test_docs_state_the_same_layers():
    """The layer table of docs/architecture.md is the one these tests apply."""
    import re

    text = (CORE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    documented = {}
    for layer, modules in re.findall(r"^\| (\d) [^|]+\| ([^|]+) \|", text, flags=re.M):
        for name in re.findall(r"`([a-z_]+)/?`", modules):
            documented[name] = int(layer)
    assert documented == {k: v for k, v in LAYERS.items() if k != "mia_core"}
