#!/usr/bin/env bash
# The whole pipeline on a CPU in a few minutes, offline, with tiny random-weight models:
# build the models, tokenize the bundled clips, train with GRPO, speak with the checkpoint, and show where the
# training time went, with the reward curve, in one picture. Everything is written under outputs/demo/.
#
#   bash demo/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=outputs/demo
echo "== 1/6 tiny models (Llasa, XCodec2) and the reward config (Whisper tiny.en) -> $OUT/models"
python -m demo.tiny_models --output_dir "$OUT/models"

echo "== 2/6 dataset: the clips in tests/data encoded with the tiny codec -> $OUT/dataset"
python create_dataset.py --dataset tests/data --output_dir "$OUT/dataset" --codec_id "$OUT/models/codec" \
    --device cpu --overwrite

echo "== 3/6 GRPO (recipes/demo.yaml) -> $OUT/grpo"
accelerate launch --cpu --num_processes 1 --num_machines 1 --num_cpu_threads_per_process 2 \
    --mixed_precision no --dynamo_backend no \
    train.py --config recipes/demo.yaml

echo "== 4/6 speak with the trained checkpoint -> $OUT/grpo_sample.wav"
python inference.py --llasa-id "$OUT/grpo" --codec-id "$OUT/models/codec" --device cpu --seed 0 \
    --text "The quick brown fox jumps over the lazy dog." --output "$OUT/grpo_sample.wav" --max-length 300

echo "== 5/6 where the training time went"
python evaluate.py profile --run_dir "$OUT/grpo"

echo "== 6/6 the run in one picture: its reward per step and where the step time went -> $OUT/summary.png"
python evaluate.py curves --run_dir "$OUT/grpo" --summary --output "$OUT/summary.png"
echo "Done: open $OUT/summary.png; the clip is $OUT/grpo_sample.wav, the checkpoint $OUT/grpo."
