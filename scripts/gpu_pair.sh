#!/usr/bin/env bash
# Issue-4 runs on a lent machine with two GPUs, one job per GPU, in the background (setsid), so a job
# outlives the call that starts it (the device tool's calls last at most 10 minutes) and later calls
# only wait, report and copy results to $OUT. Jobs run from a copy of the tree (/tmp/lab), so the
# tree the tool syncs before each call cannot change code under a running job.
#   bash scripts/gpu_pair.sh test                 GPU-only tests (foreground)
#   bash scripts/gpu_pair.sh retune               search every target shape: tokens 1-2048 on GPU 0,
#                                                 4096-65536 on GPU 1, from the default (H100) table
#   bash scripts/gpu_pair.sh targets              merge the two searches into kernels/tables/<gpu>.json,
#                                                 then the target run: bf16 on GPU 0, fp16 on GPU 1
#   bash scripts/gpu_pair.sh runs                 the target run with the package's tables, twice per dtype:
#                                                 bf16 then fp16 on GPU 0, fp16 then bf16 on GPU 1
#   bash scripts/gpu_pair.sh eager                eager rounds at 1 x 4096 (foreground, one GPU)
#   bash scripts/gpu_pair.sh wait SECONDS         wait for the running jobs; tar what they wrote to $OUT
# Peers: source /tmp/rmsnorm-peers/env.sh first (../shared/offline-gpu). History for the search:
# .peers/hist/*.csv (earlier retune.csv / tune.csv files), carried with the call.
set -uo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
W=/tmp/pair
mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0

start() {  # start NAME GPU COMMAND...: one background job on one GPU, from /tmp/lab
  local name=$1 gpu=$2
  shift 2
  rm -f "$W/$name.done"
  setsid nohup bash -c "cd /tmp/lab && export CUDA_VISIBLE_DEVICES=$gpu && $*; echo \$? > $W/$name.done" \
    > "$W/$name.log" 2>&1 < /dev/null &
  echo "started $name on GPU $gpu: $*"
}

snapshot() {  # the tree as it is now (with .peers/hist, without the bundles), for the jobs
  rm -rf /tmp/lab && mkdir -p /tmp/lab/.peers
  tar cf - --exclude=./.peers . | tar xf - -C /tmp/lab
  [[ -d .peers/hist ]] && cp -a .peers/hist /tmp/lab/.peers/
}

case ${1:-} in
  test)
    python3 -m pytest -q -m gpu tests/test_gpu_kernel.py tests/test_probe.py -n 8 -p no:cacheprovider 2>&1 \
      | tee "$OUT/pytest.log" | tail -3
    ;;
  retune)
    snapshot
    base=rmsnorm_lab/kernels/tables/default.json
    start rt-small 0 python3 -m rmsnorm_lab tune --out $W/rt-small --base $base --cap-twins \
      --tokens 1 16 64 128 256 512 1024 2048 --history .peers/hist/*.csv
    start rt-large 1 python3 -m rmsnorm_lab tune --out $W/rt-large --base $base --cap-twins \
      --tokens 4096 8192 16384 32768 65536 --history .peers/hist/*.csv
    ;;
  targets)
    python3 -m rmsnorm_lab tune --out $W/rt-merged --merge $W/rt-small $W/rt-large || exit 1
    slug=$(python3 -c "import torch; from rmsnorm_lab.device import slug; print(slug(torch.cuda.get_device_name(0)))")
    mkdir -p rmsnorm_lab/kernels/tables && cp $W/rt-merged/table.json rmsnorm_lab/kernels/tables/$slug.json
    snapshot
    start bf16 0 python3 scripts/bench_targets.py --save $W/runs/bf16 --eager
    start fp16 1 python3 scripts/bench_targets.py --save $W/runs/fp16 --dtype float16 --eager
    ;;
  runs)
    snapshot
    start runs-gpu0 0 "python3 scripts/bench_targets.py --save $W/runs/bf16-a --eager && \
      python3 scripts/bench_targets.py --save $W/runs/fp16-b --dtype float16"
    start runs-gpu1 1 "python3 scripts/bench_targets.py --save $W/runs/fp16-a --dtype float16 --eager && \
      python3 scripts/bench_targets.py --save $W/runs/bf16-b"
    ;;
  eager)
    python3 scripts/gpu_eager_ab.py --out "$OUT/eab" 2>&1 | tail -25
    ;;
  wait)
    end=$((SECONDS + ${2:-540}))
    while ((SECONDS < end)); do
      busy=0
      for l in "$W"/*.log; do [[ -f ${l%.log}.done ]] || busy=1; done
      ((busy)) || break
      sleep 5
    done
    for l in "$W"/*.log; do
      echo "== $(basename "$l") $( [[ -f ${l%.log}.done ]] && echo "exit $(cat ${l%.log}.done)" || echo running)"
      tail -4 "$l"
    done
    tar czf "$OUT/pair.tgz" -C "$W" --exclude='*.done' . 2>/dev/null
    ls -la "$OUT"
    ;;
  *)
    sed -n 2,14p "$0"
    exit 2
    ;;
esac
