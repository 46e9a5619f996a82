"""The benchmark scripts as modules, as ``python benchmarks/NAME.py`` sees them (their sibling
``harness`` importable by that name), loaded from their files: ``benchmarks/`` is not a package."""

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """``benchmarks/NAME.py`` as a module; its sibling modules it imports (``harness``, ...) are
    loaded first from the same folder and registered under their plain names."""
    for sibling in ("harness", "problems", "timed_parts"):
        if sibling not in sys.modules and (BENCHMARKS / f"{sibling}.py").is_file():
            _load(sibling)
    return sys.modules[name] if name in sys.modules else _load(name)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
