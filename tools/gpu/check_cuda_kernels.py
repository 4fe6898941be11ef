"""Checks the fused CUDA decode kernels (funasr_nano/cuda_kernels.py) against MLX's separate ops
on the GPU, and times both.

    python tools/gpu/check_cuda_kernels.py --model DIR [--preset fp32 --preset bf16] [--tokens 40]

For each preset: (1) one decode step's logits after the same prefill, kernels on vs off
(relative max error; float32 must stay below 1e-5, bf16 below 2e-2: one bf16 rounding of a
normalised activation moves logits by ~1e-2 relative); (2) `tokens` greedy tokens from a 10 s
clip, on vs off (identical required for fp32); (3) ms per decoded token, on vs off. Exits 1 on a
failed check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import funasr_nano  # noqa: E402,F401

import mlx.core as mx  # noqa: E402

from funasr_nano import qwen3  # noqa: E402
from funasr_nano.test_audio import speech_like  # noqa: E402

TOL = {"fp32": 1e-5, "bf16": 2e-2, "fp16": 2e-2}


def one(model, preset, tokens):
    asr = funasr_nano.load(model, preset=preset)
    llm = asr.net.llm
    emb = (mx.random.normal((1, 57, llm.cfg.hidden_size), key=mx.random.key(0)) * 0.02).astype(asr.dtype)
    out = {"preset": preset}
    logits = {}
    for on in (False, True):
        qwen3.CUDA_KERNELS = on
        cache = asr.new_cache()
        lg = asr.prefill(emb, cache)
        tok = mx.argmax(lg, axis=-1)
        steps = []
        for _ in range(3):
            lg = asr.decode_step(tok, cache).astype(mx.float32)
            tok = mx.argmax(lg, axis=-1)
            steps.append(lg)
        mx.eval(steps)
        logits[on] = steps
    err = max(float(mx.abs(a - b).max() / mx.abs(a).max()) for a, b in zip(logits[False], logits[True]))
    out["logits_rel_err"] = err
    wav = speech_like(10.0, seed=1)
    res = {}
    for on in (False, True, False, True):
        qwen3.CUDA_KERNELS = on
        asr.transcribe(wav, max_new_tokens=8, ignore_eos=True)
        t = {}
        r = asr.transcribe(wav, max_new_tokens=tokens, ignore_eos=True, timings=t)
        ms = 1e3 * t["decode"] / max(t["decode_steps"], 1)
        res.setdefault(on, {"tokens": r.tokens, "ms": []})["ms"].append(ms)
    out["tokens_equal"] = res[False]["tokens"] == res[True]["tokens"]
    out["first_diff"] = next((i for i, (a, b) in enumerate(zip(res[False]["tokens"], res[True]["tokens"])) if a != b), None)
    out["ms_per_token_off"] = min(res[False]["ms"])
    out["ms_per_token_on"] = min(res[True]["ms"])
    out["ok"] = err < TOL.get(preset, 2e-2) and (out["tokens_equal"] or preset != "fp32")
    qwen3.CUDA_KERNELS = None
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--preset", action="append")
    p.add_argument("--tokens", type=int, default=40)
    p.add_argument("--json")
    a = p.parse_args()
    print(f"[check] MLX {mx.__version__} {mx.default_device()}", flush=True)
    rows = []
    for pr in a.preset or ["fp32", "bf16"]:
        r = one(a.model, pr, a.tokens)
        print(f"[check] {json.dumps(r)}", flush=True)
        rows.append(r)
    print("\n| preset | logits rel err (on vs off) | tokens equal | ms/token off | ms/token on | tok/s on |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['logits_rel_err']:.2e} | {r['tokens_equal']} (first diff {r['first_diff']}) | "
              f"{r['ms_per_token_off']:.2f} | {r['ms_per_token_on']:.2f} | {1e3 / r['ms_per_token_on']:.0f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"mlx": mx.__version__, "device": str(mx.default_device()), "rows": rows}, f, indent=1)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
