"""Import ``benchmarks/accuracy.py`` (a script, not a package module) by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ACCURACY = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy.py"


def load_accuracy():
    name = "benchmark_accuracy"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ACCURACY)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
