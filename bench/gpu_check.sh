#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one go: at most 8 minutes on one H200 (each step has its own time
# limit, so a slow step costs its limit and the next still runs). Figures go to $OUT/gpu_check.txt, with
# each step's JSON and full log beside it (OUT defaults to bench/gpu_check_out).
#
#   1. single KD run (train_student.py's step) against RepDistiller's loop (bench/plain_loop.py), auto precision
#   2. the KD step at --precision fp32, bf16 and fp16
#   3. packs of 4 and 8 against the same members one after another; the teacher's share; memory per member
#   4. torch.compile with CUDA graphs (mode reduce-overhead) of the networks of the fixed-shape step (every
#      batch has the same shape: the loader drops the last short one): KD alone and a pack of 4
#   5. real 2-epoch runs (KD, and the pack of 4) extrapolated to the 240-epoch CIFAR-100 recipe
#
#   bash bench/gpu_check.sh
#   DRY=1 bash bench/gpu_check.sh     # the same steps, tiny, on the CPU (seconds; tests/test_bench.py runs it)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
# kdzoo from this checkout whether or not it is installed (a GPU machine often has torch and no install):
# the benchmarks, started by their path, find their own folder's modules first and kdzoo's through this
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-bench/gpu_check_out}
mkdir -p "$OUT"
REPORT=$OUT/gpu_check.txt
START=$(date +%s)

if [ -n "${DRY:-}" ] && [ "$DRY" != 0 ]; then
    export CUDA_VISIBLE_DEVICES=""   # the CPU whatever is installed
    KD=(--steps 2 --warmup 1 --images 200 --workers 0 --teacher resnet8 --student resnet8)
    PACKS=(--smoke)
    COMPILE=eager                    # the wiring without a compiler
    EPOCHS=(--smoke)
    PRECISIONS="fp32 bf16"           # fp16 autocast needs CUDA
    LIMIT_PLAIN=60 LIMIT_PRECISION=60 LIMIT_PACKS=60 LIMIT_COMPILE_KD=60 LIMIT_COMPILE_PACK=60 LIMIT_EPOCHS=60
else
    KD=(--steps 300 --warmup 30 --images 10000 --workers 8)
    PACKS=(--steps 100 --warmup 10)
    COMPILE=reduce-overhead
    EPOCHS=(--epochs 2)
    PRECISIONS="fp32 bf16 fp16"
    # 470 s in all if every step ran to its limit
    LIMIT_PLAIN=60 LIMIT_PRECISION=20 LIMIT_PACKS=110 LIMIT_COMPILE_KD=60 LIMIT_COMPILE_PACK=80 LIMIT_EPOCHS=100
fi

echo "kdzoo GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo '?')" > "$REPORT"
$PYTHON -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU')" >> "$REPORT" 2>&1

# step <name> <seconds> <command...>: run with a time limit, keep the log, copy its figures into the report
step() {
    local name=$1 limit=$2 began rc
    shift 2
    began=$(date +%s)
    echo "" >> "$REPORT"
    echo "== $name: $*" >> "$REPORT"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    grep -E '^(  |[a-zA-Z0-9]+ -> )' "$OUT/$name.log" | grep -v '^  File ' >> "$REPORT"
    if [ $rc = 124 ] || [ $rc = 137 ]; then
        echo "   (stopped at its ${limit}s limit)" >> "$REPORT"
    elif [ $rc != 0 ]; then
        echo "   (failed, exit $rc; last lines of $OUT/$name.log:)" >> "$REPORT"
        tail -n 5 "$OUT/$name.log" | sed 's/^/   /' >> "$REPORT"
    fi
    echo "   [$(( $(date +%s) - began ))s; $(( $(date +%s) - START ))s in all]" >> "$REPORT"
}

step kd_vs_plain $LIMIT_PLAIN $PYTHON bench/bench_kd.py "${KD[@]}" --json "$OUT/kd_vs_plain.json"
for p in $PRECISIONS; do
    step kd_$p $LIMIT_PRECISION $PYTHON bench/bench_kd.py "${KD[@]}" --no-plain --precision $p --json "$OUT/kd_$p.json"
done
step packs $LIMIT_PACKS $PYTHON bench/bench_pack.py "${PACKS[@]}" --json "$OUT/packs.json"
# compiled: KD alone, then the pack of 4 (compare with the eager figures of the packs step)
step compiled_kd $LIMIT_COMPILE_KD $PYTHON bench/bench_pack.py "${PACKS[@]}" --members kd --sizes '' \
    --compile $COMPILE --json "$OUT/compiled_kd.json"
step compiled_pack $LIMIT_COMPILE_PACK $PYTHON bench/bench_pack.py "${PACKS[@]}" --members kd,crd,dkd,simkd \
    --sizes 4 --no-alone --compile $COMPILE --json "$OUT/compiled_pack.json"
step epochs $LIMIT_EPOCHS $PYTHON bench/epoch_time.py "${EPOCHS[@]}" --json "$OUT/epochs.json"

echo "" >> "$REPORT"
echo "done in $(( $(date +%s) - START ))s" >> "$REPORT"
cat "$REPORT"
