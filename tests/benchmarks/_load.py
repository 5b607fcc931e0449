"""The accuracy benchmark's script, and its package as the tests import it."""

from __future__ import annotations

from pathlib import Path

ACCURACY = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy.py"
