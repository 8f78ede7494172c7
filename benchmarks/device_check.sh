#!/usr/bin/env bash
# One command for a device check: install rnnjax with a CUDA jax next to its peers, run the
# accelerator tests and the speed benchmark, and write OUT/device_check.json and
# OUT/device_check.md (OUT: --out DIR, default runs/device_check/<UTC time>).
#
#   bash benchmarks/device_check.sh [--quick] [--out DIR]
#
# Full mode, for a fresh GPU machine that reaches only the package registries; about 8 minutes
# in all (RNNJAX_DEVICE_CHECK_SECONDS, default 480): every phase has a time limit and the
# benchmark gets what is left.
#   install  .venv-device: this checkout with its test extras, jax[cuda12]==0.10.2 (another
#            extra with RNNJAX_JAX_CUDA, e.g. cuda13) and keras==3.15.1 (the peer and the parity
#            reference); .venv-device-torch: torch (RNNJAX_TORCH, default torch==2.13.*), in the
#            background meanwhile
#   device   jax's backend and devices
#   tests    tests/test_cudnn.py, test_pallas.py, test_mixed_precision.py (the gpu-marked tests
#            run) and the Keras parity cases on every path (test_keras_parity.py; Keras itself
#            runs on CPU, as always), with full float32 matmuls
#   speed    benchmarks/device_speed.py: rnnjax scan / cudnn / pallas at K = 1, 8, 64 against
#            Keras 3 on JAX and PyTorch on the same device (lstm8, gru8, stacked_lstm8, lstm32,
#            reuters_lstm100)
#   report   benchmarks/device_report.py: the JSON and the markdown page
# Quick mode (--quick, or RNNJAX_DEVICE_CHECK_QUICK=1), for any machine, in seconds: nothing is
# installed ($PYTHON, default python3, must have rnnjax's test dependencies); the gpu-marked
# tests (skipped without a GPU) and lstm8 at K = 1, 2 on a few hundred examples for 2 epochs, on
# the default backend. tests/test_device_check.py runs it so on CPU.
#
# Exit status: 0 when the tests and the benchmark ran to their end, 1 otherwise; the report is
# written either way.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
repo=$(pwd)

quick=${RNNJAX_DEVICE_CHECK_QUICK:-0}
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    *) echo "usage: $0 [--quick] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
out=${out:-runs/device_check/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 1
: > "$out/phases.tsv"
budget=${RNNJAX_DEVICE_CHECK_SECONDS:-480}
base_python=${PYTHON:-python3}
start=$SECONDS
# Every Python below imports this checkout's rnnjax, whatever else is installed.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

record() {  # NAME STATUS SECONDS DETAIL: one line of phases.tsv
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$out/phases.tsv"
}

last_line() {  # the last line of a log, fit for a table cell
  tail -n 1 "$1" 2>/dev/null | tr '\t|' '  ' | cut -c1-300
}

status_of() {  # exit status -> phase status
  case "$1" in
    0) echo ok ;;
    124) echo "timed out" ;;
    *) echo "failed (exit $1)" ;;
  esac
}

phase() {  # NAME LIMIT COMMAND...: COMMAND under a time limit, its output in OUT/NAME.log
  local name=$1 limit=$2 begun=$SECONDS rc
  shift 2
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  record "$name" "$(status_of "$rc")" $((SECONDS - begun)) "$(last_line "$out/$name.log")"
  return "$rc"
}

failed=0
if [ "$quick" = 1 ]; then
  record mode info 0 quick
  python=$base_python
else
  record mode info 0 full
  venv=$repo/.venv-device
  torch_venv=$repo/.venv-device-torch
  torch_begun=$SECONDS
  (
    timeout 300 bash -c '"$1" -m venv "$2" && "$2/bin/pip" install -q "$3" numpy' _ \
      "$base_python" "$torch_venv" "${RNNJAX_TORCH:-torch==2.13.*}"
    echo $? > "$out/install_torch.rc"
  ) > "$out/install_torch.log" 2>&1 &
  torch_pid=$!
  phase install 270 bash -c '"$1" -m venv "$2" && "$2/bin/pip" install -q -e ".[test]" \
      "jax[$3]==0.10.2" keras==3.15.1' _ "$base_python" "$venv" "${RNNJAX_JAX_CUDA:-cuda12}" \
    || failed=1
  python=$venv/bin/python
fi

phase device 120 "$python" -c \
  'import jax; print(jax.default_backend(), *sorted({d.device_kind for d in jax.devices()}))' \
  || failed=1
backend=$(last_line "$out/device.log" | cut -d' ' -f1)
case "$backend" in gpu | tpu | cpu) ;; *) backend=cpu ;; esac

if [ "$quick" = 1 ]; then
  phase tests 180 "$python" -m pytest -q -p no:cacheprovider -o junit_family=xunit1 -m gpu \
    --junitxml="$out/tests.xml" tests/test_cudnn.py tests/test_pallas.py || failed=1
else
  # Four pytest processes share the device (a fifth of its memory each); the scan's matmuls
  # in full float32, as the Keras parity bound needs.
  JAX_DEFAULT_MATMUL_PRECISION=float32 XLA_PYTHON_CLIENT_MEM_FRACTION=0.2 \
    RNNJAX_KERAS_PYTHON="$python" \
    phase tests 180 "$python" -m pytest -q -p no:cacheprovider -o junit_family=xunit1 -n 4 \
    -k "not auto" \
    --junitxml="$out/tests.xml" tests/test_cudnn.py tests/test_pallas.py \
    tests/test_mixed_precision.py tests/test_keras_parity.py || failed=1
  wait "$torch_pid"
  record install_torch "$(status_of "$(cat "$out/install_torch.rc" 2>/dev/null || echo 1)")" \
    $((SECONDS - torch_begun)) "$(last_line "$out/install_torch.log")"
fi

left=$((budget - (SECONDS - start) - 20))
if [ "$quick" = 1 ]; then
  speed_options=(--models lstm8 --frameworks rnnjax-scan,rnnjax-cudnn,rnnjax-pallas --ks 1,2
    --epochs 2 --train-size 128 --val-size 64 --budget-seconds 120)
  left=150
else
  speed_options=(--budget-seconds "$left" --keras-jax-python "$python"
    --torch-python "$torch_venv/bin/python")
fi
if [ "$left" -gt 30 ]; then
  phase speed $((left + 15)) "$python" benchmarks/device_speed.py --device "$backend" \
    "${speed_options[@]}" --json "$out/speed.json" --markdown "$out/speed.md" || failed=1
else
  record speed "skipped" 0 "no time left in the ${budget} s budget"
  failed=1
fi

"$base_python" benchmarks/device_report.py "$out" $((SECONDS - start))
cat "$out/device_check.md"
echo "written: $out/device_check.json, $out/device_check.md"
exit "$failed"
