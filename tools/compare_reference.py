"""Side-by-side speed of this MLX port and the official PyTorch implementation.

Both run the same checkpoint directory (default: the real-shaped synthetic model, seeded
random weights), the same audio and the same pinned number of decoded tokens (EOS ignored in
MLX; `min_new_tokens` in the reference's HF generate), in one process, after one warm-up each.

    python tools/compare_reference.py --seconds 10 --tokens 40 [--preset fp32] [--torch-device cpu]

Prints a Markdown table and writes JSON (--json). Needs torch + funasr (the `reference` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def synthetic_dir() -> Path:
    from funasr_nano.synthetic import write_synthetic_checkpoint

    root = Path(os.environ.get("FUNASR_NANO_CACHE", Path.home() / ".cache" / "funasr_nano"))
    d = root / "synthetic-real-seed0"
    if not (d / "model.pt").exists():
        write_synthetic_checkpoint(d, "real", 0)
    return d


def time_mlx(ckpt, wav, tokens, preset, repeats):
    import mlx.core as mx

    import funasr_nano
    from funasr_nano.platform_info import backend_info, blas_info

    asr = funasr_nano.load(ckpt, preset=preset)
    asr.transcribe(wav, max_new_tokens=tokens, ignore_eos=True)  # warm-up
    runs = []
    for _ in range(repeats):
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        r = asr.transcribe(wav, max_new_tokens=tokens, ignore_eos=True)
        wall = time.perf_counter() - t0
        runs.append((wall, r, mx.get_peak_memory()))
    wall, r, peak = min(runs, key=lambda x: x[0])
    info = backend_info()
    return {
        "impl": f"MLX {info.get('mlx_version', '')} ({info.get('backend', '?')}, {blas_info().get('blas', '?')} BLAS)",
        "precision": preset or "fp32",
        "end_to_end_s": wall,
        "prefill_s": r.timings["prefill"],
        "encoder_s": r.timings["encoder"] + r.timings["adaptor"],
        "ms_per_token": r.ms_per_token,
        "tokens": len(r.tokens),
        "peak_bytes": int(peak),
    }


def time_reference(ckpt, wav, tokens, device, repeats):
    import torch

    from reference_harness import _inference_kwargs, load_reference_model

    model, tok, fe = load_reference_model(ckpt)
    model.to(device)
    kw = _inference_kwargs(model, None, None, True, tokens, "")
    kw["device"] = device
    kw["llm_kwargs"] = {"min_new_tokens": tokens}
    audio = torch.from_numpy(wav.copy())

    gen_times = []
    orig = model.llm.generate

    def timed_generate(*a, **k):
        t0 = time.perf_counter()
        out = orig(*a, **k)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        gen_times.append((time.perf_counter() - t0, out.shape[-1]))
        return out

    model.llm.generate = timed_generate

    def run():
        with torch.no_grad():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.inference([audio], key=["x"], tokenizer=tok, frontend=fe, **kw)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - t0

    run()  # warm-up
    best = min(run() for _ in range(repeats))
    gen_s, n = gen_times[-1]
    try:
        import psutil

        peak = psutil.Process().memory_info().rss if not device.startswith("cuda") else torch.cuda.max_memory_allocated()
    except Exception:
        peak = 0
    return {
        "impl": f"PyTorch {torch.__version__} funasr reference ({device})",
        "precision": "fp32",
        "end_to_end_s": best,
        "prefill_s": float("nan"),
        "encoder_s": float("nan"),
        "ms_per_token": 1000 * gen_s / max(n, 1),  # generate() incl. its prefill, per token
        "tokens": int(n),
        "peak_bytes": int(peak),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint dir (default: real-shaped synthetic)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--preset", action="append", default=None, help="MLX precision preset(s)")
    ap.add_argument("--torch-device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from funasr_nano.synthetic import is_synthetic
    from funasr_nano.test_audio import speech_like

    ckpt = Path(args.model) if args.model else synthetic_dir()
    wav = speech_like(args.seconds, 0)
    rows = [time_mlx(ckpt, wav, args.tokens, p, args.repeats) for p in (args.preset or ["fp32"])]
    if not args.no_reference:
        rows.append(time_reference(ckpt, wav, args.tokens, args.torch_device, args.repeats))
    label = "synthetic weights (seeded random, real shapes)" if is_synthetic(ckpt) else f"weights: {ckpt}"
    print(f"\n{args.seconds:g} s audio, {args.tokens} pinned tokens, {label}\n")
    print("| implementation | precision | end-to-end s | RTF | encoder+adaptor s | prefill s | ms/token | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['impl']} | {r['precision']} | {r['end_to_end_s']:.2f} | {r['end_to_end_s'] / args.seconds:.3f} "
              f"| {r['encoder_s']:.2f} | {r['prefill_s']:.2f} | {r['ms_per_token']:.1f} | {r['peak_bytes'] / 1e6:.0f} |")
    if not args.no_reference:
        ref = rows[-1]["end_to_end_s"]
        for r in rows[:-1]:
            print(f"\n{r['precision']}: MLX end-to-end is {ref / r['end_to_end_s']:.2f}x the reference's speed")
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": args.seconds, "tokens": args.tokens, "weights": label,
                                               "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
