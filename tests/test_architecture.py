"""The package's architecture: one folder per concern, imports that only go down, entry points alone at the top."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "emotion_lightning"
# Layers from the bottom up: a module may import its own layer and those below it, never one above.
LAYERS = ["data", "evaluation", "models", "training", "inference"]
ENTRY_POINTS = {"train", "eval", "predict", "export", "serve", "report", "aggregate", "calibrate", "download", "cli", "stream",
                "leaderboard"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """Package modules that `path` imports (at the top or inside functions), resolved to the nearest module."""
    name = module_name(path)
    base = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            prefix = base
            for _ in range(node.level - 1):
                prefix = prefix.rpartition(".")[0]
            module = (f"{prefix}.{node.module}" if node.module else prefix) if node.level else node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own face is no edge
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_imports_only_go_down_the_layers(module):
    here = layer(module)
    if here is None:
        return  # the package root and its entry points may use every layer
    upward = [target for target in import_graph()[module] if (layer(target) or -1) > here]
    assert not upward, f"{module} ({LAYERS[here]}) imports from a higher layer: {upward}"


def test_only_entry_points_sit_in_the_package_root():
    root_modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert root_modules <= ENTRY_POINTS, f"move {sorted(root_modules - ENTRY_POINTS)} into a concern's folder"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(LAYERS)


def test_the_onnx_path_of_the_predictor_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, emotion_lightning.inference.predictor, emotion_lightning.inference.metadata; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr[-2000:]
