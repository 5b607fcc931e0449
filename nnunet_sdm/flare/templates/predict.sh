#!/bin/sh
# FLARE submission (nnunet-sdm flare package): segment every <case>_0000@@FILE_ENDING@@ in INPUT into
# OUTPUT/<case>@@FILE_ENDING@@.
#   sh predict.sh [INPUT [OUTPUT]]      (defaults: /workspace/inputs /workspace/outputs)
# Needs nnUNetv2_predict_from_modelfolder (nnunetv2) and nnunet-sdm on PATH (or a python3 that imports
# nnunet_sdm); no network access. Environment (all optional):
#   DEVICE  cuda | cpu | mps (default: cuda if nvidia-smi lists a GPU, else cpu)
#   TTA     1 (default: mirroring, as nnU-Net) or 0 (faster, no mirroring)
#   NPP NPS nnU-Net's preprocessing / export processes (default 1 each, least memory)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
INPUT=${1:-/workspace/inputs}
OUTPUT=${2:-/workspace/outputs}
MODEL="$HERE/@@MODEL@@"
FOLDS="@@FOLDS@@"
CHECKPOINT="@@CHECKPOINT@@"
FILE_ENDING="@@FILE_ENDING@@"
# SDM-guided post-processing depth in mm (nnunet-sdm predict --sdm-guided-depth); empty: nnU-Net's prediction
SDM_GUIDED_DEPTH="@@SDM_GUIDED_DEPTH@@"

if ! command -v nnUNetv2_predict_from_modelfolder >/dev/null 2>&1; then
    echo "predict.sh: nnUNetv2_predict_from_modelfolder not on PATH; install nnunetv2 (see README.md)" >&2
    exit 1
fi
# nnU-Net finds our trainer classes through nnUNet_extTrainer (one-line shims in the package)
if command -v nnunet-sdm >/dev/null 2>&1; then
    nnUNet_extTrainer=$(nnunet-sdm trainers-path)
else
    nnUNet_extTrainer=$(python3 -c 'import nnunet_sdm; print(nnunet_sdm.trainers_path())')
fi
export nnUNet_extTrainer
# not used by prediction from a model folder; set so that nnU-Net does not warn
export nnUNet_raw="${nnUNet_raw:-$HERE/model}"
export nnUNet_preprocessed="${nnUNet_preprocessed:-$HERE/model}"
export nnUNet_results="${nnUNet_results:-$HERE/model}"

if [ -z "${DEVICE:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
        DEVICE=cuda
    else
        DEVICE=cpu
    fi
fi
TTA_FLAG=""
if [ "${TTA:-1}" = "0" ]; then
    TTA_FLAG="--disable_tta"
fi

# predict into a scratch folder, then move only the segmentations (nnU-Net also writes its json files)
mkdir -p "$OUTPUT"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
if [ -n "$SDM_GUIDED_DEPTH" ]; then
    # our predictor (the same label maps as nnU-Net's), then the components the SDM head places outside are
    # removed; nnU-Net's own output stays in $SCRATCH/unfiltered
    if command -v nnunet-sdm >/dev/null 2>&1; then
        NNUNET_SDM="nnunet-sdm"
    else
        NNUNET_SDM="python3 -m nnunet_sdm.cli"
    fi
    # NNUNET_SDM, FOLDS and TTA_FLAG are word lists: split on purpose
    # shellcheck disable=SC2086
    nnUNet_results="$HERE/@@MODEL_ROOT@@" $NNUNET_SDM predict -i "$INPUT" -o "$SCRATCH" -d "@@DATASET@@" \
        -c "@@CONFIGURATION@@" -tr "@@TRAINER@@" -p "@@PLANS@@" -f $FOLDS -chk "$CHECKPOINT" \
        -device "$DEVICE" -npp "${NPP:-1}" -nps "${NPS:-1}" --disable_progress_bar $TTA_FLAG \
        --sdm-guided-depth "$SDM_GUIDED_DEPTH"
else
    # FOLDS and TTA_FLAG are word lists: split on purpose
    # shellcheck disable=SC2086
    nnUNetv2_predict_from_modelfolder -i "$INPUT" -o "$SCRATCH" -m "$MODEL" -f $FOLDS -chk "$CHECKPOINT" \
        -device "$DEVICE" -npp "${NPP:-1}" -nps "${NPS:-1}" --disable_progress_bar $TTA_FLAG
fi
for f in "$SCRATCH"/*"$FILE_ENDING"; do
    [ -e "$f" ] || continue
    mv "$f" "$OUTPUT/"
done
