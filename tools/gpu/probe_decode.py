"""Where the batch-1 decode time goes: one decoder step measured in variants.

    python tools/gpu/probe_decode.py --model DIR [--preset fp32 --preset bf16] [--steps 64]
        [--env MLX_MAX_OPS_PER_BUFFER=500 ...] [--json F]

For each preset (and each ``--env`` setting, in a fresh process, since MLX reads those
variables once), after a prefill of ``--prompt`` random rows, times ``--steps`` greedy steps
pipelined as in `funasr_nano.runtime.decode` (the next step is queued before the host reads a token):

  kvcache        the growing-cache path (no attention mask at batch 1)
  static         the compiled fixed-buffer step of `funasr_nano.runtime.compiled_step`
  gemv           only the step's matrix products (7 per layer + LM head), chained
  launch         2000 chained tiny element-wise ops: the cost of one op on this backend

Measured (H100, MLX 0.32.4 CUDA, 2026-11-26): joining q/k/v and gate/up into one matrix each
(5 -> 2 products per layer) did not make the step faster (fp32 3.42 -> 3.58 ms, bf16 3.85 ->
3.63, q4 3.55 -> 3.95; the joined matrix-vector products alone were slower, 1.73 -> 1.98 ms in
fp32), so the decoder keeps the checkpoint's separate projections. Two fused CUDA kernels
(mx.fast.cuda_kernel: q/k RMSNorm + RoPE in one, residual add + RMSNorm in one; 19 -> 14
kernels per layer, logits within 5e-7 of the separate ops in fp32, same tokens) did not either
(fp32 3.36 -> 3.35 ms, bf16 3.67 -> 3.79, q4 4.12 -> 5.17): the step is bound by MLX's
per-operation dispatch, not by the kernels' count or bytes, so they were not kept.

Prints one Markdown table; ``--json`` writes the rows. Works on any backend (use ``--tiny`` on
a CPU for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import funasr_nano  # noqa: E402,F401  before mlx.core (OpenBLAS for MLX's Linux CPU backend)


def _time_loop(first, advance, steps):
    """Pipelined greedy loop: queue step n+1, then read token n. Returns ms per step."""
    import mlx.core as mx

    tok = first
    nxt = advance(tok)
    mx.async_eval(nxt)
    tok.tolist()
    tok = nxt
    mx.eval(tok)
    t0 = time.perf_counter()
    for _ in range(steps):
        nxt = advance(tok)
        mx.async_eval(nxt)
        tok.tolist()
        tok = nxt
    mx.eval(tok)
    return 1e3 * (time.perf_counter() - t0) / steps


def measure(model: str, preset: str, steps: int, prompt: int) -> list[dict]:
    import mlx.core as mx

    import funasr_nano  # noqa: F811
    from funasr_nano.runtime.cache import StaticKV

    asr = funasr_nano.load(model, preset=preset)
    llm = asr.net.llm
    d = llm.cfg.hidden_size
    rows = []

    def add(variant, ms, note=""):
        rows.append({"preset": preset, "variant": variant, "ms_per_step": round(ms, 3),
                     "tok_per_s": round(1e3 / ms, 1) if ms > 0 else None, "note": note})
        print(f"  {preset:6s} {variant:12s} {ms:8.3f} ms  {1e3 / ms:7.1f}/s  {note}", flush=True)

    emb = (mx.random.normal((1, prompt, d), key=mx.random.key(0)) * 0.02).astype(asr.dtype)

    def prefill():
        cache = asr.new_cache()
        h = llm.hidden(emb, cache, positions=0, mask="causal")
        tok = mx.argmax(llm.logits(h[:, -1]), axis=-1)
        mx.eval(tok, [c.state for c in cache])
        return cache, tok

    # kvcache: the growing-cache path (what `generate` runs for one row on a GPU)
    cache, tok = prefill()

    def adv_kv(t):
        h = llm.hidden(llm.embed(t[:, None]), cache, positions=cache[0].offset, mask=None)  # noqa: F821
        return mx.argmax(llm.logits(h[:, -1]), axis=-1)

    add("kvcache", _time_loop(tok, adv_kv, steps))
    del cache

    # static: the compiled fixed-buffer step of funasr_nano.runtime.compiled_step
    cache, tok = prefill()
    kv = StaticKV(cache, prompt + steps + 16)
    del cache
    state = {"k": kv.keys, "v": kv.values, "pos": prompt}
    valid = mx.ones((1, kv.length), dtype=mx.bool_)
    base = mx.zeros((1,), dtype=mx.int32)
    fn = asr.decode_step_fn()

    def adv_static(t):
        nxt, state["k"], state["v"] = fn(t.astype(mx.int32), mx.array([state["pos"]], dtype=mx.int32), base,  # noqa: F821
                                         valid, state["k"], state["v"])  # noqa: F821
        state["pos"] += 1  # noqa: F821
        return nxt

    add("static", _time_loop(tok, adv_static, steps))
    del kv, state

    # only the matrix products of a step (whatever modules the layers hold), chained
    def gemv(x):
        for layer in llm.model.layers:
            q, k, v = layer.self_attn.project(x)
            x = x + layer.self_attn.o_proj(q + mx.concatenate([k, v], axis=-1))
            m = layer.mlp
            x = x + m.down_proj(m.gate_proj(x) * m.up_proj(x))
        return llm.logits(x)

    x0 = mx.zeros((1, d), dtype=asr.dtype)
    add("gemv", _time_loop(mx.array([0]), lambda t: mx.argmax(gemv(x0 + t[:, None].astype(x0.dtype) * 0), axis=-1),
                           steps), "matrix products only")

    a = mx.zeros((1, d), dtype=mx.float32)

    def chain(t):
        y = a + t[:, None].astype(a.dtype) * 0
        for _ in range(1000):
            y = y * 1.0001 + 1e-6
        return mx.argmax(y, axis=-1)

    ms = _time_loop(mx.array([0]), chain, max(8, steps // 4))
    add("launch", ms / 2000, "per element-wise op (2000 ops chained)")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint dir (default: the real-shaped synthetic model)")
    p.add_argument("--tiny", action="store_true", help="the tiny synthetic model (smoke runs)")
    p.add_argument("--preset", action="append")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--prompt", type=int, default=120, help="prompt rows before decoding")
    p.add_argument("--env", action="append", default=[], help="VAR=VALUE for a second pass (repeatable)")
    p.add_argument("--json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    presets = a.preset or ["fp32", "bf16"]
    if a.model is None:
        from funasr_nano.synthetic import ensure_synthetic

        a.model = str(ensure_synthetic("tiny" if a.tiny else "real", 0, progress=print))
    if a.child:
        rows = []
        for pr in presets:
            rows += measure(a.model, pr, a.steps, a.prompt)
        print("JSON " + json.dumps(rows))
        return 0
    import mlx.core as mx

    print(f"[probe] MLX {mx.__version__} device {mx.default_device()} model {a.model}", flush=True)
    all_rows = []
    for env in [""] + a.env:
        e = dict(os.environ)
        if env:
            k, v = env.split("=", 1)
            e[k] = v
        print(f"[probe] env: {env or '(default)'}", flush=True)
        cmd = [sys.executable, __file__, "--child", "--model", a.model, "--steps", str(a.steps),
               "--prompt", str(a.prompt)] + sum((["--preset", x] for x in presets), [])
        r = subprocess.run(cmd, env=e, capture_output=True, text=True)
        for line in r.stdout.splitlines():
            if line.startswith("JSON "):
                for row in json.loads(line[5:]):
                    row["env"] = env or "default"
                    all_rows.append(row)
            else:
                print(line, flush=True)
        if r.returncode:
            print(r.stderr[-3000:], flush=True)
    print("\n| env | preset | variant | ms/step | tokens/s | note |\n|---|---|---|---:|---:|---|")
    for r in all_rows:
        print(f"| {r['env']} | {r['preset']} | {r['variant']} | {r['ms_per_step']} | {r['tok_per_s']} | {r['note']} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"mlx": mx.__version__, "device": str(mx.default_device()), "rows": all_rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
