#!/usr/bin/env bash
# The GPU measurement of the train step, as one prepared run (about 7 minutes on one H200): benchmarks/train_step.py
# at full size -- (b) the flare21 plans (patch 80 x 192 x 160, batch 2, 13 classes) and (c) nnU-Net's ResEnc M
# plans on the same synthetic data -- for stock nnU-Net, nnUNetTrainerSDM and nnUNetTrainerSDM_Xue2020, with
# nnU-Net's torch.compile and AMP (its CUDA defaults), one process per trainer. Prints the JSON and writes it
# to ${OUT:-.}/train_step_cuda.json.
#
# Usage (from the repository root, on a machine with a CUDA GPU and the package installed):
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
out=${OUT:-.}
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-8} nnUNet_def_n_proc=${nnUNet_def_n_proc:-8}
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
"$python" benchmarks/train_step.py --device cuda --compile --configs b c --rounds 1 --warmup 3 --steps 10 \
  --work "${WORK:-/tmp/nnunet_sdm_train_step_cuda}" --out "$out/train_step_cuda.json"
