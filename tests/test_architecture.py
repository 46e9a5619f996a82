"""The package's shape: no import circle (function-level imports included), every module imports,
no module over 400 lines, inference without the trainer."""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dmireid"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(tree: ast.AST, module: str, is_package: bool, type_checking: bool = False):
    """(target, names) of every import statement (outside ``if TYPE_CHECKING:`` blocks unless
    ``type_checking``)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and is_type_checking(node) and not type_checking:
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield target, [a.name for a in node.names]


def import_graph(type_checking: bool = True) -> dict[str, set[str]]:
    """module -> the package modules it imports (function-level and ``TYPE_CHECKING`` imports included)."""
    modules = all_modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        for target, names in imported_names(tree, name, path.name == "__init__.py", type_checking):
            if not target or not target.startswith("dmireid"):
                continue
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if submodules:
                graph[name].update(submodules)
            if len(submodules) < len(names) or not names:
                if target in modules:
                    graph[name].add(target)
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_relative_imports_resolve():
    tree = ast.parse("from ..errors import DmireidError\nfrom . import distributed as dist\n")
    got = list(imported_names(tree, "dmireid.engine.trainer", False))
    assert got == [("dmireid.errors", ["DmireidError"]), ("dmireid.engine", ["distributed"])]


def test_no_import_circle():
    cycle = find_cycle(import_graph())  # type-checking-only imports count: a circle for a reader too
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_graph_sees_type_checking_imports():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .trainer import Trainer\n")
    assert list(imported_names(tree, "dmireid.engine.hooks", False)) == [("typing", ["TYPE_CHECKING"])]
    assert ("dmireid.engine.trainer", ["Trainer"]) in imported_names(tree, "dmireid.engine.hooks", False, True)


APPLICATIONS = ("dmireid.inference", "dmireid.serve", "dmireid.cli")
# the layers, each importing only from those listed for it (besides the package's leaf modules)
FORBIDDEN = {
    "dmireid.engine": APPLICATIONS + ("dmireid.config", "dmireid.config_schema", "dmireid.config_validation"),
    "dmireid.embedding": APPLICATIONS + ("dmireid.engine",),
    "dmireid.objectives": APPLICATIONS + ("dmireid.engine", "dmireid.embedding", "dmireid.build", "dmireid.config",
                                          "dmireid.config_schema"),
}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``module -> target`` for every import of a layer in :data:`FORBIDDEN` that it must not make."""
    bad = []
    for module, targets in graph.items():
        for layer, forbidden in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                bad += [f"{module} -> {t}" for t in sorted(targets)
                        if any(t == f or t.startswith(f + ".") for f in forbidden)]
    return bad


def test_training_imports_no_application_and_the_embedding_layer_no_trainer():
    """engine/ imports nothing from inference/, serve/ or the CLI (nor the config); embedding/ no
    trainer and no application; objectives none of these (function-level imports included;
    the one exception is ``Trainer.from_config``'s import of the composition root)."""
    graph = import_graph()
    graph["dmireid.engine.trainer"].discard("dmireid.build")  # from_config: the documented convenience
    assert layer_violations(graph) == []
    assert layer_violations({"dmireid.engine.hooks": {"dmireid.inference.calibration"}}) == [
        "dmireid.engine.hooks -> dmireid.inference.calibration"]  # the rule finds a planted violation


def test_objectives_get_their_own_settings_never_the_memory_section():
    """``grep -rn "MemoryConfig\\|\\.settings\\." dmireid/objectives`` finds nothing."""
    hits = [f"{p.name}:{i}" for p in (PACKAGE / "objectives").glob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if "MemoryConfig" in line or ".settings." in line]
    assert hits == []


def test_the_trainer_takes_objects_not_a_config():
    from dmireid.engine import Trainer, TrainingParts

    params = inspect.signature(Trainer).parameters
    assert list(params)[:1] == ["parts"] and params["parts"].annotation in (TrainingParts, "TrainingParts")
    assert not any("cfg" in p or "config" in p for p in params)
    assert callable(Trainer.from_config)


def test_no_module_over_400_lines():
    long = {name: len(p.read_text().splitlines()) for name, p in all_modules().items()}
    assert {n: c for n, c in long.items() if c > 400} == {}


@pytest.mark.parametrize("group", ["dmireid", "dmireid.inference"])
def test_every_module_imports(group):
    names = [n for n in all_modules() if (n == group or n.startswith(group + ".")) and n != "dmireid.__main__"]
    code = "import importlib\nfor n in %r:\n    importlib.import_module(n)\n" % names
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_inference_imports_no_trainer():
    code = ("import dmireid.inference, sys; "
            "assert not [m for m in sys.modules if m.startswith('dmireid.engine.trainer')], 'trainer imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


BELOW_BUILD = ("engine", "inference", "objectives", "data", "models", "pseudo_labels", "memory", "evaluation")


def test_only_the_composition_root_reads_a_config():
    """No module of the packages below dmireid.build reads a config attribute (``cfg.x``, ``model_cfg.x``)."""
    readers = []
    for name, path in all_modules().items():
        if name.split(".")[1:2] and name.split(".")[1] in BELOW_BUILD:
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and (node.value.id == "cfg" or node.value.id.endswith("_cfg"))):
                    readers.append(f"{name}:{node.lineno} {node.value.id}.{node.attr}")
    assert readers == []
