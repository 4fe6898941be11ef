"""Side-by-side speed of this MLX port and the official PyTorch implementation.

Both run the same checkpoint directory (default: the real-shaped synthetic model, seeded
random weights), the same audio and the same pinned number of decoded tokens (EOS ignored in
MLX; `min_new_tokens` in the reference's HF generate), in one process, after one warm-up each.

    python tools/compare_reference.py --seconds 10 --tokens 40 [--preset fp32 ...] \
        [--torch-device cpu|cuda] [--reference-dtype fp32 --reference-dtype bf16 ...] [--json F]

Columns, both sides measured the same way:

* end-to-end: the whole call (audio samples in, text out), best of ``--repeats`` after a warm-up;
  RTF = end-to-end / audio seconds, RTFx = 1 / RTF.
* encoder+adaptor: MLX stage timings; reference: ``audio_encoder`` + ``audio_adaptor`` forwards
  (synchronized, so the CUDA time is counted where it is spent).
* prefill: MLX's prefill (prompt through the decoder + first token); reference: HF ``generate``
  with 1 new token.
* ms/token: the marginal cost of one decoded token. MLX: decode seconds / decode steps;
  reference: (generate(N) - generate(1)) / (N - 1), the method of the asv suite.

Reference precisions (``--reference-dtype``, repeatable, run in this order on one loaded model):
``fp32`` (funasr's default inference; torch's default float32 matmul precision: no TF32),
``tf32`` (fp32 with ``torch.backends.cuda.matmul.allow_tf32 = True``; the platform notes measured MLX's
CUDA backend at 371 TFLOP/s for a float32 8192^2 matmul on an H100, far above the ~67 TFLOP/s FP32
CUDA-core peak, i.e. TF32 tensor cores, so this is the like-for-like speed row on a GPU), ``bf16`` (funasr's own
``llm_dtype="bf16"`` path: LLM cast to bfloat16 under autocast, audio encoder fp32; compare with the
MLX preset ``bf16-llm``).

``--require-gpu`` fails unless MLX's default device is the GPU (and torch sees CUDA when
``--torch-device cuda``). Prints a Markdown table and writes JSON (``--json``). Needs torch + funasr
(the `reference` extra) unless ``--no-reference``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # funasr_nano, tests.support

import funasr_nano  # noqa: E402,F401
from funasr_nano.io.formats import json_safe  # noqa: E402  before mlx.core: gives MLX's Linux CPU backend OpenBLAS (funasr_nano/runtime/blas.py)

REFERENCE_DTYPES = ("fp32", "tf32", "bf16")


def synthetic_dir() -> Path:
    from funasr_nano.synthetic import ensure_synthetic

    return ensure_synthetic("real", 0, progress=print)


def weights_label(ckpt: Path) -> str:
    from funasr_nano.synthetic import MARKER, is_synthetic

    if not is_synthetic(ckpt):
        return f"weights: {ckpt}"
    preset = "?"
    for line in (ckpt / MARKER).read_text(encoding="utf-8").splitlines():
        if line.startswith("preset:"):
            preset = line.split(":", 1)[1].strip()
    shapes = "real shapes" if preset == "real" else f"'{preset}' test shapes"
    return f"synthetic weights (seeded random, {shapes})"


def mlx_env() -> dict:
    import mlx.core as mx

    try:
        from funasr_nano.runtime.platform_info import backend_info

        info = backend_info()
    except Exception as e:  # informational only: never let the label stop a benchmark
        dev = mx.default_device()
        di = mx.device_info() if hasattr(mx, "device_info") else {}
        info = {"backend": "cpu" if dev.type == mx.cpu else "gpu", "device": str(dev),
                "device_name": di.get("device_name"), "backend_info_error": repr(e)}
    out = {"mlx_version": mx.__version__, "backend": info.get("backend"), "device": info.get("device"),
           "device_name": info.get("device_name")}
    if info.get("backend") == "cpu":
        out["blas"] = info.get("blas")
    return out


def mlx_label(env: dict) -> str:
    if env.get("backend") == "cpu":
        return f"MLX {env['mlx_version']} (cpu, {env.get('blas', '?')} BLAS)"
    name = env.get("device_name") or env.get("device")
    return f"MLX {env['mlx_version']} ({env.get('backend')}, {name})"


def _rates(row: dict, seconds: float) -> dict:
    e2e = row["end_to_end_s"]
    row["rtf"] = e2e / seconds
    row["rtfx"] = seconds / e2e if e2e > 0 else float("nan")
    mpt = row["ms_per_token"]
    row["decode_tokens_per_s"] = 1000.0 / mpt if mpt == mpt and mpt > 0 else float("nan")
    row["e2e_tokens_per_s"] = row["tokens"] / e2e if e2e > 0 else float("nan")
    return row


def best_of(call, repeats: int):
    """Run `call()` `repeats` times (after the caller's warm-up); return (wall s, result, peak
    bytes of MLX memory during that call) of the fastest run, and the wall times of all runs."""
    import mlx.core as mx

    runs = []
    for _ in range(repeats):
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        out = call()
        runs.append((time.perf_counter() - t0, out, int(mx.get_peak_memory())))
    wall, out, peak = min(runs, key=lambda x: x[0])
    return wall, out, peak, [x[0] for x in runs]


def time_mlx(ckpt, wav, tokens, preset, repeats, env):
    import mlx.core as mx

    t0 = time.perf_counter()
    asr = funasr_nano.load(ckpt, preset=preset)
    load_s = time.perf_counter() - t0
    weights = int(mx.get_active_memory())
    asr.transcribe(wav, max_new_tokens=tokens, ignore_eos=True)  # warm-up
    wall, r, peak, walls = best_of(lambda: asr.transcribe(wav, max_new_tokens=tokens, ignore_eos=True), repeats)  # noqa: F821
    row = {
        "impl": mlx_label(env),
        "side": "mlx",
        "precision": preset or "fp32",
        "load_s": load_s,
        "end_to_end_s": wall,
        "end_to_end_all_s": walls,
        "frontend_s": r.timings["frontend"],
        "encoder_s": r.timings["encoder"] + r.timings["adaptor"],
        "prefill_s": r.timings["prefill"],
        "ms_per_token": r.ms_per_token,
        "tokens": len(r.tokens),
        "prompt_tokens": r.prompt_tokens,
        "peak_bytes": int(peak),
        "weight_bytes": weights,
        "token_ids": [int(t) for t in r.tokens],
    }
    del asr, r
    gc.collect()
    mx.clear_cache()
    return _rates(row, len(wav) / 16000.0)


def _timed_runner(model, tok, fe, audio, sync):
    """Wrap the reference's generate() and its encoder/adaptor forwards with synchronized timers ->
    (run, the original generate). ``run(inference kwargs)`` -> (wall s, last generate s,
    encoder+adaptor s, generated ids, inference result)."""
    import torch

    gen_rec: list = []
    stage_rec: dict = {"encoder": 0.0}
    orig_gen = model.llm.generate

    def timed_generate(*a, **k):
        sync()
        t = time.perf_counter()
        out = orig_gen(*a, **k)
        sync()
        gen_rec.append((time.perf_counter() - t, out))
        return out

    def timed_forward(mod):
        orig = mod.forward

        def fwd(*a, **k):
            sync()
            t = time.perf_counter()
            out = orig(*a, **k)
            sync()
            stage_rec["encoder"] += time.perf_counter() - t
            return out

        return fwd

    model.llm.generate = timed_generate
    model.audio_encoder.forward = timed_forward(model.audio_encoder)
    model.audio_adaptor.forward = timed_forward(model.audio_adaptor)

    def run(kw):
        gen_rec.clear()
        stage_rec["encoder"] = 0.0
        with torch.no_grad():
            sync()
            t = time.perf_counter()
            res, _ = model.inference([audio], key=["x"], tokenizer=tok, frontend=fe, **kw)
            sync()
            wall = time.perf_counter() - t
        g_s, ids = gen_rec[-1]
        return wall, g_s, stage_rec["encoder"], ids, res

    return run, orig_gen


def _peak_bytes(cuda: bool) -> int:
    """Peak CUDA memory allocated, else (CPU) the process's resident set; 0 without psutil."""
    import torch

    if cuda:
        return torch.cuda.max_memory_allocated()
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except Exception:
        return 0


def _reference_row(model, run, dtype, *, device, tokens, repeats, load_s, seconds) -> dict:
    """Time one reference precision: warm-up, then `repeats` runs of generate(N) and of generate(1)
    (ms/token is their difference); the TF32 flags must already be set for `dtype`."""
    import torch

    from tests.support.reference_harness import inference_kwargs

    cuda = device.startswith("cuda")
    llm_dtype = "bf16" if dtype == "bf16" else "fp32"

    def kwargs(n):
        kw = inference_kwargs(model, None, None, True, n, "")
        kw["device"] = device
        kw["llm_dtype"] = llm_dtype  # read by funasr's inference_llm (casts the LLM, autocast)
        kw["llm_kwargs"] = {"min_new_tokens": n}
        return kw

    kw_n, kw_1 = kwargs(tokens), kwargs(1)
    run(kw_n)  # warm-up (also performs the bf16 cast)
    run(kw_1)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    full = [run(kw_n) for _ in range(repeats)]
    one = [run(kw_1) for _ in range(repeats)]
    best = min(full, key=lambda x: x[0])
    g_n = min(x[1] for x in full)
    g_1 = min(x[1] for x in one)
    n = int(best[3].shape[-1])
    peak = _peak_bytes(cuda)
    row = {
        "impl": f"PyTorch {torch.__version__} funasr reference ({device}"
                + (f", {torch.cuda.get_device_name(0)}" if cuda else "") + ")",
        "side": "reference",
        "precision": dtype,
        "load_s": load_s,
        "end_to_end_s": best[0],
        "end_to_end_all_s": [x[0] for x in full],
        "frontend_s": float("nan"),
        "encoder_s": best[2],
        "prefill_s": g_1,
        "generate_s": g_n,
        "ms_per_token": 1000.0 * (g_n - g_1) / max(n - 1, 1),
        "tokens": n,
        "peak_bytes": int(peak),
        "token_ids": [int(t) for t in best[3][0].tolist()],
        "text": best[4][0].get("text", ""),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }
    return _rates(row, seconds)


def _reference_env(device: str) -> dict:
    """The reference side's environment: torch, CUDA, the fbank backend, library versions, threads."""
    import torch

    from tests.support.reference_harness import fbank_backend, library_versions

    env = {"torch": torch.__version__, "cuda_available": bool(torch.cuda.is_available()),
           "device": device, "fbank_backend": fbank_backend(), "versions": library_versions(),
           "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        env["device_name"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def reference_rows(ckpt, wav, tokens, device, repeats, dtypes):
    """Rows for the official PyTorch implementation, one per reference dtype (one loaded model)."""
    import torch

    from tests.support.reference_harness import load_reference_model

    cuda = device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    model, tok, fe = load_reference_model(ckpt)
    model.to(device)
    sync()
    load_s = time.perf_counter() - t0
    audio = torch.from_numpy(wav.copy())
    # generate() wall times and ids; encoder/adaptor forward times (synchronized)
    run, orig_gen = _timed_runner(model, tok, fe, audio, sync)

    rows = []
    for dtype in dtypes:
        if dtype not in REFERENCE_DTYPES:
            raise SystemExit(f"unknown --reference-dtype {dtype!r}; choose from {REFERENCE_DTYPES}")
        prev_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        if dtype == "tf32":
            torch.backends.cudnn.allow_tf32 = True
        if dtype != "bf16" and model.llm.dtype != torch.float32:
            raise RuntimeError("run the bf16 reference last: funasr casts the LLM to bf16 in place")
        rows.append(_reference_row(model, run, dtype, device=device, tokens=tokens, repeats=repeats,
                                   load_s=load_s, seconds=len(wav) / 16000.0))
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev_tf32
    env = _reference_env(device)
    model.llm.generate = orig_gen
    return rows, env


def _first_divergence(a: list, b: list) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _parse_args(argv):
    """-> (arguments, reference dtypes), after the checks argparse cannot make itself."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint dir (default: real-shaped synthetic)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--preset", action="append", default=None, help="MLX precision preset(s)")
    ap.add_argument("--torch-device", default="cpu")
    ap.add_argument("--reference-dtype", action="append", default=None,
                    help="reference precision(s): fp32 (default), tf32, bf16; bf16 must come last")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--require-gpu", action="store_true", help="fail unless MLX (and torch, on cuda) use the GPU")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.tokens < 2:
        ap.error("--tokens must be >= 2 (ms/token is a difference of two lengths)")
    ref_dtypes = args.reference_dtype or ["fp32"]
    if "bf16" in ref_dtypes and ref_dtypes.index("bf16") != len(ref_dtypes) - 1:
        ap.error("--reference-dtype bf16 must be the last one (funasr casts the LLM in place)")
    return args, ref_dtypes


def _require_gpu(args):
    """--require-gpu: stop unless MLX's default device is the GPU (and torch sees CUDA when asked to use it)."""
    import mlx.core as mx

    if mx.default_device().type != mx.gpu:
        raise SystemExit(f"--require-gpu: MLX's default device is {mx.default_device()}, not the GPU")
    if not args.no_reference and args.torch_device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--require-gpu: torch.cuda.is_available() is False")


def _mark_divergence(rows) -> dict | None:
    """Record in every other row where its tokens first differ from the fp32 reference's -> that row."""
    ref_fp32 = next((r for r in rows if r["side"] == "reference" and r["precision"] == "fp32"), None)
    for r in rows:
        if ref_fp32 is not None and r is not ref_fp32:
            r["first_divergence_vs_reference_fp32"] = _first_divergence(r["token_ids"], ref_fp32["token_ids"])
    return ref_fp32


def _print_summary(rows, ref_fp32, seconds, tokens, label):
    """The Markdown table, the speed ratios of like-for-like precisions, the first divergences."""
    print(f"\n{seconds:g} s audio, {tokens} pinned tokens, {label}\n")
    print("| implementation | precision | end-to-end s | RTF | RTFx | encoder+adaptor ms | prefill ms | ms/token "
          "| tokens/s | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['impl']} | {r['precision']} | {r['end_to_end_s']:.3f} | {r['rtf']:.4f} | {r['rtfx']:.1f} "
              f"| {1000 * r['encoder_s']:.1f} | {1000 * r['prefill_s']:.1f} | {r['ms_per_token']:.2f} "
              f"| {r['decode_tokens_per_s']:.1f} | {r['peak_bytes'] / 1e6:.0f} |")
    refs = [r for r in rows if r["side"] == "reference"]
    if refs:
        print()
        for ref in refs:
            for r in rows:
                like = {"fp32": True, "tf32": r["precision"] == "fp32",
                        "bf16": r["precision"].startswith("bf16")}[ref["precision"]]
                if r["side"] == "mlx" and like:
                    print(f"MLX {r['precision']} vs reference {ref['precision']}: end-to-end "
                          f"{ref['end_to_end_s'] / r['end_to_end_s']:.2f}x, per token "
                          f"{ref['ms_per_token'] / r['ms_per_token']:.2f}x the reference's speed")
    if ref_fp32 is not None:
        div = {r["precision"] + "/" + r["side"]: r.get("first_divergence_vs_reference_fp32") for r in rows
               if r is not ref_fp32}
        print(f"\nfirst token index differing from reference fp32 (None = all {tokens} equal): {div}")


def main(argv=None) -> int:
    args, ref_dtypes = _parse_args(argv)

    import mlx.core as mx

    from funasr_nano.synthetic.signals import speech_like

    env = mlx_env()
    print(f"[compare] MLX {env['mlx_version']} default device {mx.default_device()} ({env.get('device_name')})",
          flush=True)
    if args.require_gpu:
        _require_gpu(args)

    ckpt = Path(args.model) if args.model else synthetic_dir()
    label = weights_label(ckpt)
    wav = speech_like(args.seconds, 0)
    rows = []
    ref_env = None

    def dump():  # after every stage, so a run cut short still leaves its rows
        if args.json:
            Path(args.json).write_text(json.dumps({
                "seconds": args.seconds, "tokens": args.tokens, "weights": label, "checkpoint": str(ckpt),
                "mlx": env, "reference": ref_env, "host": {"platform": platform.platform(),
                                                           "cpu_count": os.cpu_count()},
                "rows": json_safe(rows)}, indent=2))

    for p in args.preset or ["fp32"]:
        t = time.perf_counter()
        rows.append(time_mlx(ckpt, wav, args.tokens, p, args.repeats, env))
        r = rows[-1]
        print(f"[compare] MLX {p}: e2e {r['end_to_end_s']:.3f} s, {r['ms_per_token']:.2f} ms/token "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
        dump()
    if not args.no_reference:
        t = time.perf_counter()
        ref_rows, ref_env = reference_rows(ckpt, wav, args.tokens, args.torch_device, args.repeats, ref_dtypes)
        rows += ref_rows
        gc.collect()
        print(f"[compare] reference {ref_dtypes}: {time.perf_counter() - t:.1f} s", flush=True)

    ref_fp32 = _mark_divergence(rows)
    _print_summary(rows, ref_fp32, args.seconds, args.tokens, label)
    dump()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
