#!/usr/bin/env bash
# The GPU check at Llasa-1B's real size (one H100 / H200, under 8 minutes), from the repository root:
#   bash benchmarks/gpu_check.sh           # random weights at the real shapes, nothing downloaded
#   bash benchmarks/gpu_check.sh --tiny    # the same path with tiny models on a CPU
# PYTHON names the interpreter (default: the project's .venv, else python).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
exec "$PYTHON" -m benchmarks.gpu_check "$@"
