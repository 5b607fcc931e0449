"""Accuracy benchmark: several trainers on the same data, split, fold, seeds and budget; one results table.

The five steps and their outputs are described in ``benchmarks/accuracy_harness/__init__.py``; the
results of committed runs and the commands that made them are in ``docs/accuracy.md``.

Usage::

    python benchmarks/accuracy.py --raw ../shared/data/Dataset004_Hippocampus --preset hippocampus_cpu \\
        --out /tmp/acc_hippocampus
    python benchmarks/accuracy.py --raw RAW --test-raw TEST --trainers nnUNetTrainer nnUNetTrainerSDM \\
        --plans-override cpu_small --epochs 5 --iters-per-epoch 50 --out OUT [--device cuda]
    python benchmarks/accuracy.py --raw ../shared/data/Dataset004_Hippocampus --preset hippocampus_cpu_warm \\
        --out /tmp/acc_warm
"""

from __future__ import annotations

import sys

from accuracy_harness.run import main  # benchmarks/ is this script's folder, first on sys.path

if __name__ == "__main__":
    sys.exit(main())
