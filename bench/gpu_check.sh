#!/usr/bin/env bash
# GPU check, unattended, a few minutes: the tests marked `gpu`, then the Grow sampling benchmark
# (Hugging Face generate() vs CTranslate2) and the Improve fine-tuning benchmark on the GPU, for
# the shipped 2M-parameter policy and a wide random one (~110M parameters, where the GPU has
# arithmetic to do), then a report: candidates/s, tokens/s, peak memory, estimated FLOP/s
# against the device's peak (bench/gpu_report.py says how they are estimated and where the peak
# figures come from).
#
#   bash bench/gpu_check.sh                  # on a machine with a CUDA GPU
#   DEVICE=cpu bash bench/gpu_check.sh       # dry check anywhere: the gpu tests skip, benchmarks run on the CPU
#
# Settings (environment): DEVICE (cuda), OUT (a fresh directory; default runs/gpu-check/<UTC time>-<pid>),
# PYTHON (python), SMALL=1 (tiny sizes, for the dry check). Safe to re-run: every run writes a
# new directory and never reads an older one. Exit status: 0 when the tests passed and every
# benchmark ran; 1 when something failed (the report says what ran); 2 when DEVICE=cuda and
# torch sees no GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python}
OUT=${OUT:-runs/gpu-check/$(date -u +%Y%m%dT%H%M%SZ)-$$}
if [ -e "$OUT" ]; then
    echo "gpu_check: $OUT exists; give a new OUT (each run writes a fresh directory)" >&2
    exit 1
fi
mkdir -p "$OUT"
echo "gpu_check: device $DEVICE, output in $OUT"
failed=0

# The machine: torch, CUDA, the devices, CTranslate2's view of them.
"$PY" - "$DEVICE" > "$OUT/device.json" <<'EOF'
import json, sys
import torch
out = {"requested": sys.argv[1], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
       "cuda_available": torch.cuda.is_available(), "devices": []}
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out["devices"].append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                               "memory_gib": round(p.total_memory / 2**30, 1),
                               "bf16": torch.cuda.is_bf16_supported()})
try:
    import ctranslate2
    out["ctranslate2"] = ctranslate2.__version__
    out["ctranslate2_cuda_devices"] = ctranslate2.get_cuda_device_count()
    if out["ctranslate2_cuda_devices"]:
        out["ctranslate2_cuda_compute_types"] = sorted(ctranslate2.get_supported_compute_types("cuda"))
except Exception as e:  # noqa: BLE001 - recorded, not fatal: the benchmarks say the rest
    out["ctranslate2_error"] = repr(e)
print(json.dumps(out, indent=2))
EOF
cat "$OUT/device.json"
if [ "${DEVICE%%:*}" = "cuda" ] && ! grep -q '"cuda_available": true' "$OUT/device.json"; then
    echo "gpu_check: DEVICE=$DEVICE but torch sees no CUDA device (see $OUT/device.json); on a CPU-only machine run DEVICE=cpu bash bench/gpu_check.sh" >&2
    exit 2
fi

if [ "${SMALL:-0}" = "1" ]; then
    SOURCES=8; SAMPLES=2; ROUNDS=1; ROWS=200; STEPS=2; WIDE_SOURCES=4; WIDE_ROWS=100
    WIDE=(--d-model 64 --ffn-dim 128 --layers 1 --heads 2)
else
    SOURCES=200; SAMPLES=8; ROUNDS=2; ROWS=3000; STEPS=20; WIDE_SOURCES=64; WIDE_ROWS=3000
    WIDE=(--d-model 1024 --ffn-dim 4096 --layers 6 --heads 16)
fi

# 1. The gpu tests (they skip, with the reason, where torch sees no GPU).
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py > "$OUT/tests.log" 2>&1
tests_rc=$?
tests_summary=$(grep -E "passed|failed|skipped|error" "$OUT/tests.log" | tail -n 1)
echo "gpu tests: ${tests_summary:-exit $tests_rc}"
if [ $tests_rc -ne 0 ]; then
    failed=1
elif [ "${DEVICE%%:*}" = "cuda" ] && ! echo "$tests_summary" | grep -q "passed"; then
    echo "gpu_check: no gpu test passed on $DEVICE" >&2
    failed=1
fi

# 2. A wide random policy with the shipped tokenizer: enough arithmetic per token to load a GPU.
WIDE_POLICY="$OUT/wide-policy"
"$PY" - "$WIDE_POLICY" "${WIDE[@]}" > "$OUT/wide-policy.log" 2>&1 <<'EOF' || { echo "gpu_check: could not build the wide policy" >&2; failed=1; }
import argparse, os, sys
sys.path.insert(0, os.getcwd())
from transformers import AutoTokenizer
from rest.model.policy import build_model, save_policy
ap = argparse.ArgumentParser()
ap.add_argument("out"); ap.add_argument("--d-model", type=int); ap.add_argument("--ffn-dim", type=int)
ap.add_argument("--layers", type=int); ap.add_argument("--heads", type=int)
a = ap.parse_args()
tok = AutoTokenizer.from_pretrained("models/bc-libreoffice-de-en")
model = build_model(tok, a.d_model, a.ffn_dim, a.layers, a.heads, dropout=0.1, seed=0)
save_policy(model, tok, a.out, {"kind": "bench", "note": "random weights, for throughput only"})
print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
EOF

run() {  # run NAME CMD...: one benchmark, its log beside its JSON; a failure is recorded, the rest go on
    local name=$1; shift
    echo "gpu_check: $name"
    if ! "$@" > "$OUT/$name.log" 2>&1; then
        echo "gpu_check: $name failed (see $OUT/$name.log)" >&2
        failed=1
    fi
}

# 3. Grow sampling: HF batched (the baseline), the project's HF path, CTranslate2 (same weights).
run sampling-shipped "$PY" bench/sampling.py --device "$DEVICE" --sources $SOURCES --num-samples $SAMPLES \
    --rounds $ROUNDS --paths hf_batched,hf,ctranslate2 --out "$OUT/sampling-shipped.json"
if [ -d "$WIDE_POLICY" ]; then
    run sampling-wide "$PY" bench/sampling.py --policy "$WIDE_POLICY" --device "$DEVICE" --sources $WIDE_SOURCES \
        --num-samples $SAMPLES --rounds 1 --max-length-ratio 1.0 --paths hf,ctranslate2 --out "$OUT/sampling-wide.json"
fi

# 4. Improve fine-tuning: length-bucketed batches vs per-batch padding (precision auto: bf16 on a GPU).
run finetune-shipped "$PY" bench/finetune.py --device "$DEVICE" --rows $ROWS --steps $STEPS --rounds $ROUNDS \
    --paths bucketed,per_batch --out "$OUT/finetune-shipped.json"
if [ -d "$WIDE_POLICY" ]; then
    run finetune-wide "$PY" bench/finetune.py --policy "$WIDE_POLICY" --device "$DEVICE" --rows $WIDE_ROWS \
        --steps $STEPS --rounds $ROUNDS --paths bucketed --out "$OUT/finetune-wide.json"
fi

# 5. The report (markdown + JSON).
"$PY" bench/gpu_report.py --out-dir "$OUT" --tests-rc $tests_rc --tests-summary "$tests_summary" \
    --sampling "shipped=$OUT/sampling-shipped.json" --sampling "wide=$OUT/sampling-wide.json" \
    --finetune "shipped=$OUT/finetune-shipped.json" --finetune "wide=$OUT/finetune-wide.json" \
    || failed=1
rm -rf "$WIDE_POLICY"  # random weights: nothing to keep
echo "gpu_check: report in $OUT/report.md and $OUT/report.json"
exit $failed
