#!/usr/bin/env bash
# Train the course checkpoints (data/checkpoints) with the lessons' recipes, then rewrite data/MANIFEST.
#
#   bash scripts/train_course_checkpoints.sh            # every lesson that ships checkpoints
#   bash scripts/train_course_checkpoints.sh 05 06      # some lessons
#
# Two runs at a time (one per core of a 2-core machine, one thread each; on a GPU machine set JOBS=1).
# Each run is `python -m lecturelib.train MODEL --profile course ... --seed K --export`: the exact
# command, commit, machine, wall time, curve and test metrics are stored beside the weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-"0 1 2"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# lesson -> models and the command-line settings its checkpoints use on top of the course profile
declare -A MODELS=(
  [01]="patch_p10 patch_p22 patch_p38"
  [03]="multiscale singlescale"
  [04]="recurrent onepass"
  [05]="deconv_k3 deconv_k4 resizeconv"
  [06]="fcn32s fcn16s fcn8s deconvnet"
  [07]="localizer rcnn fast_rcnn faster_rcnn yolo"
  [08]="sds cascade maskrcnn"
  [09]="stn_classifier plain_classifier caption_attention caption_meanpool"
)
declare -A ARGS=(
  [01]="--epochs 4"
  [03]="--n-train 4096 --width 32"
  [04]="--n-train 4096"
  [05]="--epochs 16"
  [06]="--image-size 128 --width 8 --n-train 3072"
  [07]="--width 8 --n-train 2048"   # every detector sees the same 2048 scenes x 8 epochs (equal images seen)
  [08]="--width 12 --n-train 2048 --n-test 128 --epochs 16"   # SDS, the cascade and Mask R-CNN: the same 2048 scenes x 16 epochs
  [09]="--n-train 4096"
)
# models whose settings differ from their lesson's (the localizer trains on its own one-item scenes)
declare -A MODEL_ARGS=(
  [localizer]=""
)
lessons=("$@")
[ ${#lessons[@]} -gt 0 ] || lessons=(01 03 04 05 06 07 08 09)

commands=()
for lesson in "${lessons[@]}"; do
  for seed in $SEEDS; do
    for model in ${MODELS[$lesson]}; do
      commands+=("$PY -m lecturelib.train $model --profile course ${MODEL_ARGS[$model]-${ARGS[$lesson]}} --seed $seed --export \
--out runs/course/$model/seed$seed --overwrite --no-progress")
    done
  done
done
mkdir -p runs/course
printf '%s\n' "${commands[@]}" | xargs -P "$JOBS" -I{} bash -c '{} > "runs/course/$(echo "{}" | md5sum | cut -c1-8).log" 2>&1 && echo "done: {}" || { echo "FAILED: {}"; exit 255; }'
$PY -m lecturelib.assets --write-manifest
