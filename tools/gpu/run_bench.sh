#!/usr/bin/env bash
# Device-side driver for the MLX-CUDA benchmarks (tools/gpu/README.md has the call sequence).
#
#   bash tools/gpu/run_bench.sh STEP...
#
# Steps (run in the order given; later parts pull in what they need when it is missing):
#   stage    call 1: keep .mlxa/part_aa in /tmp, install .whl/*.whl into $SITE, keep the git
#            bundle in /tmp, check that torch sees CUDA and the funasr reference imports
#   mlx      join /tmp/part_aa + .mlxb/part_ab into the mlx-cuda-13 wheel, install it and the mlx
#            wheel into $SITE (skipped when mlx already imports from there)
#   check    MLX's default device must be the GPU (unless REQUIRE_GPU=0); prints versions
#   ckpt     write the real-shaped synthetic checkpoint once ($FUNASR_NANO_CACHE/synthetic-real-seed0,
#            with the asv suite's .complete marker) and convert it to the safetensors cache
#   compare  tools/compare_reference.py: MLX presets vs the funasr PyTorch reference on CUDA
#            -> $OUT/compare.json, $OUT/compare.log
#   sweep    tools/gpu/sweep.py: {bf16,q4,fp32} x batch {1,8,32} x {5,10,30} s
#            -> $OUT/sweep.json, $OUT/sweep.md, $OUT/sweep.log
#   asv      the quick asv suite (funasr_nano.bench.quick) with -E existing:python3, results filed
#            under the bundled HEAD -> $OUT/asv_results.tgz (results/<machine>/ + report), $OUT/asv.log
#   probe    tools/gpu/probe_decode.py: batch-1 decode step variants (fp32, bf16, q4; default env and
#            PROBE_ENV, e.g. "MLX_MAX_OPS_PER_BUFFER=1000") -> $OUT/probe.json, $OUT/probe.log
#   memory   tools/gpu/probe_memory.py: per-stage peak memory, bf16 and fp32, batch 32, 10 and 30 s
#            (MEMORY_ARGS) -> $OUT/memory.json, $OUT/memory.log
#   policy   tools/gpu/sweep.py over the backend-policy variants (quantized compute bf16 vs fp32,
#            dequantize threshold, compiled step), interleaved, batch 1/8/32, 10 s (POLICY_ARGS)
#            -> $OUT/policy_sweep.json, $OUT/policy_sweep.md, $OUT/policy_sweep.log
#   ab       funasr-nano bench policy-ab: each policy choice both ways -> $OUT/policy_ab.{json,md}
#   peers    tools/peers.py: this project beside funasr, transformers, mlx-audio, funasr-mlx (carry
#            .peerwhl from tools/gpu/peer_wheels.sh; PEERS_ARGS="--prepare" writes the forms only)
#            -> $OUT/peers.json, $OUT/peers.md, $OUT/peers.log, $OUT/peer_logs.tgz
#   part1 = mlx check ckpt compare sweep        part2 = mlx check ckpt asv
#   part3 = mlx check ckpt memory policy         part4 = mlx check ckpt compare ab
#
# Everything keeps to DEADLINE seconds (default 570) from the script's start: compare and asv run
# under `timeout`, the sweep gets a budget and writes its JSON after every configuration.
# Overridable for local dry runs: PY SITE OUT FUNASR_NANO_CACHE SYNTH_PRESET(real|tiny)
# STASH(/tmp) TORCH_DEVICE(cuda) REQUIRE_GPU(1) COMPARE_ARGS SWEEP_ARGS QUICK_ARGS DEADLINE.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
PY="${PY:-python3}"
SITE="${SITE:-/tmp/site}"
OUT="${OUT:-/tmp/gpu_out}"
STASH="${STASH:-/tmp}"  # survives between calls on the warm machine
mkdir -p "$OUT"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export ASV_PYTHONPATH="$PYTHONPATH"  # asv drops PYTHONPATH from benchmark processes unless this is set
export PYTHONUNBUFFERED=1
export FUNASR_NANO_CACHE="${FUNASR_NANO_CACHE:-/tmp/fncache}"
SYNTH_PRESET="${SYNTH_PRESET:-real}"
CKPT="$FUNASR_NANO_CACHE/synthetic-$SYNTH_PRESET-seed0"
TORCH_DEVICE="${TORCH_DEVICE:-cuda}"
REQUIRE_GPU="${REQUIRE_GPU:-1}"
DEADLINE="${DEADLINE:-570}"
GPUFLAG=""; [ "$REQUIRE_GPU" = 1 ] && GPUFLAG="--require-gpu"
NOISE='torch_complex firstly|^Notice: ffmpeg|ffmpeg backend|sudo apt install ffmpeg|brew install ffmpeg'

log() { echo "[run_bench $(date +%H:%M:%S) +${SECONDS}s] $*"; }
left() { echo $(( DEADLINE - SECONDS )); }
pipinst() { "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@"; }

step_stage() {
  if [ -f .mlxa/part_aa ]; then cp .mlxa/part_aa "$STASH/part_aa" && log "kept $STASH/part_aa"; fi
  if ls .whl/*.whl >/dev/null 2>&1; then
    pipinst .whl/*.whl || { log "wheel install FAILED"; return 1; }
    log "installed $(ls .whl/*.whl | wc -l) wheels into $SITE"
  fi
  for f in repo.bundle HEAD.txt; do [ -f ".whl/$f" ] && cp ".whl/$f" "$STASH/$f"; done
  nvidia-smi -L 2>/dev/null || true
  timeout 240 "$PY" - <<'EOF' 2>&1 | grep -Ev "$NOISE"
import time, importlib.metadata as md
t = time.perf_counter()
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import funasr, funasr.models.fun_asr_nano.model, funasr.frontends.wav_frontend, funasr.tokenizer.hf_tokenizer
import funasr.utils.fbank as fb
from funasr.register import tables
need = {"model": ("model_classes", "FunASRNano"), "encoder": ("encoder_classes", "SenseVoiceEncoderSmall"),
        "adaptor": ("adaptor_classes", "Transformer"), "frontend": ("frontend_classes", "WavFrontend"),
        "tokenizer": ("tokenizer_classes", "HuggingfaceTokenizer")}
miss = [k for k, (t_, n) in need.items() if getattr(tables, t_).get(n) is None]
print("funasr", funasr.__version__, "fbank:", "torchaudio" if fb._HAS_TORCHAUDIO else "kaldi-native-fbank" if fb._knf else "NONE",
      "missing registrations:", miss or "none", f"({time.perf_counter() - t:.1f} s)")
import asv, omegaconf, librosa, kaldiio, soundfile, soxr
print("asv", md.version("asv"), "asv_runner", md.version("asv_runner"), "transformers", md.version("transformers"))
raise SystemExit(1 if miss else 0)
EOF
}

step_mlx() {
  if "$PY" -c "import mlx.core" 2>/dev/null; then log "mlx already importable"; return 0; fi
  [ -f "$STASH/part_aa" ] || { log "no $STASH/part_aa: run 'stage' with .mlxa carried first (fresh machine?)"; return 1; }
  [ -f .mlxb/part_ab ] || { log "no .mlxb/part_ab: carry .mlxb"; return 1; }
  cat "$STASH/part_aa" .mlxb/part_ab > "$STASH/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl" &&
    pipinst "$STASH/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl" .mlxb/mlx-0.32.4-*.whl &&
    log "installed mlx + mlx-cuda-13"
}

step_check() {
  "$PY" - "$REQUIRE_GPU" <<'EOF'
import sys, time
import mlx.core as mx
d = mx.default_device()
print("mlx", mx.__version__, "default device", d, mx.device_info() if hasattr(mx, "device_info") else "")
if sys.argv[1] == "1" and d.type != mx.gpu:
    raise SystemExit("MLX default device is not the GPU")
n = 4096 if d.type == mx.gpu else 512
a = mx.random.normal((n, n)); mx.eval(a @ a)
t = time.perf_counter(); mx.eval(a @ a); print(f"{n}^2 fp32 matmul {1e3 * (time.perf_counter() - t):.2f} ms")
EOF
}

step_ckpt() {
  if [ -f "$CKPT/.complete" ]; then log "checkpoint $CKPT present"; return 0; fi
  "$PY" - "$CKPT" "$SYNTH_PRESET" <<'EOF'
import sys, time
from pathlib import Path
from funasr_nano.synthetic import write_synthetic_checkpoint
from funasr_nano.checkpoint.cache import load_checkpoint_weights
d = Path(sys.argv[1])
t = time.perf_counter(); write_synthetic_checkpoint(d, sys.argv[2], 0)
print(f"wrote {d} ({(d / 'model.pt').stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.1f} s")
t = time.perf_counter(); w = load_checkpoint_weights(d); del w
print(f"safetensors cache ready in {time.perf_counter() - t:.1f} s")
(d / ".complete").write_text("ok\n")  # benchmarks/common.py's marker: the asv suite reuses this directory
EOF
}

step_compare() {
  local t=$(( $(left) - 200 )); [ "$t" -lt 60 ] && t=60
  [ "$SYNTH_PRESET" = real ] || t=$(( $(left) - 20 ))
  log "compare (timeout ${t}s)"
  # shellcheck disable=SC2086
  timeout "$t" "$PY" tools/compare_reference.py --model "$CKPT" --seconds 10 --tokens 40 \
    --preset fp32 --preset bf16 --preset q8 --preset q4 --preset bf16-llm \
    --torch-device "$TORCH_DEVICE" --reference-dtype fp32 --reference-dtype tf32 --reference-dtype bf16 \
    $GPUFLAG --json "$OUT/compare.json" ${COMPARE_ARGS:-} 2>&1 | grep --line-buffered -Ev "$NOISE" | tee "$OUT/compare.log"
  log "compare exit ${PIPESTATUS[0]}"
}

step_sweep() {
  local budget=$(( $(left) - 75 )); [ "$budget" -lt 30 ] && budget=30
  log "sweep (budget ${budget}s)"
  # shellcheck disable=SC2086
  timeout $(( $(left) - 5 )) "$PY" tools/gpu/sweep.py --model "$CKPT" --budget-s "$budget" $GPUFLAG \
    --json "$OUT/sweep.json" --md "$OUT/sweep.md" ${SWEEP_ARGS:-} 2>&1 | tee "$OUT/sweep.log"
  log "sweep exit ${PIPESTATUS[0]}"
}

step_memory() {
  log "memory probe (timeout $(( $(left) - 10 ))s)"
  # shellcheck disable=SC2086
  timeout "$(( $(left) - 10 ))" "$PY" tools/gpu/probe_memory.py --model "$CKPT" ${MEMORY_ARGS:---preset bf16 --preset fp32 --batch 32 --seconds 10 --seconds 30 --tokens 8 --policy cuda --policy encoder_eval_every=10 --policy encoder_eval_every=1} \
    --json "$OUT/memory.json" 2>&1 | tee "$OUT/memory.log"
  log "memory exit ${PIPESTATUS[0]}"
}

step_policy() {
  local budget=$(( $(left) - 60 )); [ "$budget" -lt 30 ] && budget=30
  log "policy sweep (budget ${budget}s)"
  # shellcheck disable=SC2086
  timeout $(( $(left) - 5 )) "$PY" tools/gpu/sweep.py --model "$CKPT" --budget-s "$budget" $GPUFLAG \
    ${POLICY_ARGS:---preset bf16 --preset q8 --preset q4 --variant "q8|quant_compute=fp32" --variant "q4|quant_compute=fp32" --variant "q4|dequant_min_rows=never" --variant "q4|dequant_min_rows=8" --variant "q8|dequant_min_rows=never" --variant "bf16|compiled_decode_rows=64" --variant "bf16|encoder_eval_every=10" --batch 1 --batch 8 --batch 32 --seconds 10} \
    --json "$OUT/policy_sweep.json" --md "$OUT/policy_sweep.md" 2>&1 | tee "$OUT/policy_sweep.log"
  log "policy sweep exit ${PIPESTATUS[0]}"
}

step_ab() {
  log "policy-ab (timeout $(( $(left) - 10 ))s)"
  # shellcheck disable=SC2086
  timeout "$(( $(left) - 10 ))" "$PY" -m funasr_nano bench policy-ab --model "$CKPT" ${AB_ARGS:---repeats 5 --seconds 10 --tokens 32 --batch 32} \
    --json "$OUT/policy_ab.json" > "$OUT/policy_ab.md" 2> >(tee "$OUT/policy_ab.log" >&2)
  log "policy-ab exit $?"; cat "$OUT/policy_ab.md"
}

step_probe() {
  local envs=() e
  for e in ${PROBE_ENV:-MLX_MAX_OPS_PER_BUFFER=1000}; do envs+=(--env "$e"); done
  log "probe (timeout $(( $(left) - 10 ))s)"
  timeout "$(( $(left) - 10 ))" "$PY" tools/gpu/probe_decode.py --model "$CKPT" --preset fp32 --preset bf16 \
    --preset q4 --steps "${PROBE_STEPS:-64}" "${envs[@]}" --json "$OUT/probe.json" 2>&1 | tee "$OUT/probe.log"
  log "probe exit ${PIPESTATUS[0]}"
}

step_peers() {
  # tools/peers.py on the GPU: every runtime on the same checkpoint (needs mlx in $SITE and the
  # checkpoint: calls 1 and 2 first). Each peer's wheels (.peerwhl/<peer>/, tools/gpu/peer_wheels.sh)
  # go into their own --target dir, kept in $STASH/peers between calls of the warm machine.
  local p n sites=()
  if [ -d .peerwhl ]; then
    for p in .peerwhl/*/; do
      n=$(basename "$p"); mkdir -p "$STASH/peers/$n"
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$STASH/peers/$n" "$p"*.whl &&
        log "installed $(ls "$p" | tr '\n' ' ')into $STASH/peers/$n"
    done
  fi
  for p in "$STASH"/peers/*/; do [ -d "$p" ] && sites+=(--site "$(basename "$p")=${p%/}"); done
  local dev=cuda; [ "$TORCH_DEVICE" = cpu ] && dev=cpu
  log "peers (timeout $(( $(left) - 10 ))s): ${sites[*]}"
  # shellcheck disable=SC2086
  timeout "$(( $(left) - 10 ))" "$PY" tools/peers.py --model "$CKPT" --device "$dev" --seconds 10 --tokens 40 \
    --repeats 3 --memory-budget-gb 100 "${sites[@]}" --json "$OUT/peers.json" --md "$OUT/peers.md" \
    --log-dir "$STASH/peer_logs" ${PEERS_ARGS:-} 2>&1 | grep --line-buffered -Ev "$NOISE" | tee "$OUT/peers.log"
  log "peers exit ${PIPESTATUS[0]}"
  # one tarball: $OUT returns at most 8 files, and there is one worker log per row (16 on CUDA)
  [ -d "$STASH/peer_logs" ] && tar czf "$OUT/peer_logs.tgz" -C "$STASH" peer_logs
}

step_asv() {
  local want=""
  [ -f "$STASH/HEAD.txt" ] && want=$(cat "$STASH/HEAD.txt")
  if [ -n "$want" ] && git rev-parse -q --verify HEAD >/dev/null 2>&1 && [ "$(git rev-parse HEAD)" != "$want" ]; then
    # The device's copy of the tree can carry a .git of another commit: results must be filed
    # under the commit whose code runs, which the bundle names.
    log "git HEAD $(git rev-parse --short HEAD) is not the bundled $want: rebuilding from the bundle"
    rm -rf .git
  fi
  if ! git rev-parse -q --verify HEAD >/dev/null 2>&1; then
    rm -rf .git  # the device's copy of the tree may hold a .git that is not a usable repository
    if ! command -v git >/dev/null; then log "no git on this machine: asv cannot file results; skipped"; return 1; fi
    [ -f "$STASH/repo.bundle" ] || { log "no $STASH/repo.bundle (carry .whl in the stage call)"; return 1; }
    git config --global --add safe.directory '*'
    git init -q . && git fetch -q "$STASH/repo.bundle" HEAD && git update-ref refs/heads/main FETCH_HEAD &&
      git symbolic-ref HEAD refs/heads/main && git reset -q &&
      log "git repository rebuilt at $(git rev-parse --short HEAD) ($(git status --porcelain --untracked-files=no | wc -l) files differ from it)"
  fi
  # The quick selection in chunks: asv writes its result file only when a run ends, so a run cut
  # by the deadline would lose everything; each chunk's results are merged into the same file.
  local sel=() i n chunk limit rc=0
  mapfile -t sel < <("$PY" -c "from funasr_nano.bench.quick import QUICK, selectors; print(chr(10).join(selectors(QUICK)))")
  n=${#sel[@]}; chunk=${ASV_CHUNK:-10}; i=${ASV_SKIP:-0}; limit=${ASV_LIMIT:-$n}
  [ "$n" -gt 0 ] || { log "no quick selection (funasr_nano.bench.quick missing?)"; return 1; }
  log "asv quick suite: entries $i..$((limit - 1)) of $n, $chunk per asv run"
  : > "$OUT/asv.log"
  while [ "$i" -lt "$limit" ]; do
    if [ "$(left)" -lt "${ASV_MIN_LEFT:-100}" ]; then
      log "asv: out of time before entry $i of $n; resume in a later call with ASV_SKIP=$i"; rc=1; break
    fi
    local args=() k
    for k in "${sel[@]:i:$(( limit - i < chunk ? limit - i : chunk ))}"; do args+=(--only "$k"); done
    log "asv entries $i..$((i + ${#args[@]} / 2 - 1)) (timeout $(( $(left) - 20 ))s)"
    # shellcheck disable=SC2086
    timeout "$(( $(left) - 20 ))" "$PY" -m funasr_nano.bench.quick run --no-publish --no-report "${args[@]}" \
      ${QUICK_ARGS:-} 2>&1 | grep --line-buffered -Ev "$NOISE" | tee -a "$OUT/asv.log"
    log "asv exit ${PIPESTATUS[0]}"
    i=$(( i + ${#args[@]} / 2 ))
  done
  local m
  m=$(sed -n 's/^\[bench\] machine  *\([^ ]*\).*/\1/p' "$OUT/asv.log" | head -1)
  [ -n "$m" ] && "$PY" - "$STASH/asv_report" "$m" <<'EOF' 2>&1 | tee -a "$OUT/asv.log"
import sys
from funasr_nano.bench.report import build_report
rep = build_report("results", sys.argv[1], machines=[sys.argv[2]])
print(rep["markdown"])
EOF
  if [ -n "$m" ] && [ -d "results/$m" ]; then
    mkdir -p "$STASH/asv_report"
    tar czf "$OUT/asv_results.tgz" "results/$m" results/benchmarks.json -C "$STASH" asv_report 2>/dev/null
    log "results/$m -> $OUT/asv_results.tgz ($(ls "results/$m" | wc -l) files)"
  else
    log "no results/<machine> directory found (machine '$m')"; rc=1
  fi
  return $rc
}

[ $# -gt 0 ] || { sed -n 2,37p "$0"; exit 2; }
steps=()
for s in "$@"; do
  case "$s" in
    part1) steps+=(mlx check ckpt compare sweep) ;;
    part2) steps+=(mlx check ckpt asv) ;;
    part3) steps+=(mlx check ckpt memory policy) ;;
    part4) steps+=(mlx check ckpt compare ab) ;;
    all) steps+=(mlx check ckpt compare sweep asv) ;;
    stage|mlx|check|ckpt|compare|sweep|asv|probe|memory|policy|ab|peers) steps+=("$s") ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
rc=0
for x in "${steps[@]}"; do
  log "== $x"
  "step_$x" || { rc=1; log "step $x FAILED"; case "$x" in stage|mlx|check|ckpt) break ;; esac; }
done
log "done (rc=$rc); files in $OUT:"; ls -la "$OUT"
exit $rc
