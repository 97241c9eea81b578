#!/usr/bin/env bash
# One device check (CUDA parity with BiaPy, prediction and training speed, fp16, DDP): under 8 minutes
# on one H100. Writes benchmarks/results/gpu_check_<device>.json and .md. Options go to gpu_check.py,
# e.g. `bash benchmarks/gpu_check.sh --tiny --device cpu` (seconds) or `--sections parity predict`.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"
limit="${GPU_CHECK_TIMEOUT:-475}"
# Each section keeps to its own budget; this outer limit only guards against a hang outside Python.
timeout --kill-after=10 "$limit" python "$here/gpu_check.py" "$@"
status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "gpu_check.sh: stopped after $limit s; the results saved so far are in the output folder" >&2
fi
exit "$status"
