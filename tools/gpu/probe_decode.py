"""Where the batch-1 decode time goes: one decoder step measured in variants.

    python tools/gpu/probe_decode.py --model DIR [--preset fp32 --preset bf16] [--steps 64]
        [--env MLX_MAX_OPS_PER_BUFFER=500 ...] [--json F]

For each preset (and each ``--env`` setting, in a fresh process, since MLX reads those
variables once), after a prefill of ``--prompt`` random rows, times ``--steps`` greedy steps
pipelined as in `funasr_nano.generate` (the next step is queued before the host reads a token):

  kvcache        the uncompiled path (growing KVCache, no mask at batch 1)
  static         the compiled fixed-buffer step of `funasr_nano.fast_decode` (GPU default)
  static-fused   same, q/k/v and gate/up projections as one matrix each (3 -> 1, 2 -> 1)
  kvcache-fused  the uncompiled path with the fused projections
  gemv           only the step's matrix products (7 per layer + LM head), chained
  gemv-fused     same with the fused matrices (4 per layer + LM head)
  launch         500 chained tiny element-wise ops: the cost of one op on this backend

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


def _proj(x, p):
    import mlx.core as mx

    if "scales" in p:
        return mx.quantized_matmul(x, p["weight"], p["scales"], p.get("biases"), transpose=True,
                                   group_size=p["group_size"], bits=p["bits"], mode=p["mode"])
    return x @ p["weight"].T


def _params(m):
    import mlx.nn as nn

    d = {"weight": m["weight"]}
    if isinstance(m, nn.QuantizedLinear):
        d.update(scales=m["scales"], group_size=m.group_size, bits=m.bits, mode=m.mode)
        if "biases" in m:
            d["biases"] = m["biases"]
    return d


def _cat(ps):
    import mlx.core as mx

    out = dict(ps[0])
    for k in ("weight", "scales", "biases"):
        if k in out:
            out[k] = mx.concatenate([p[k] for p in ps], axis=0)
    return out


def fused_weights(llm):
    import mlx.core as mx

    fused = []
    for layer in llm.model.layers:
        a, m = layer.self_attn, layer.mlp
        f = {"qkv": _cat([_params(a.q_proj), _params(a.k_proj), _params(a.v_proj)]),
             "gate_up": _cat([_params(m.gate_proj), _params(m.up_proj)]),
             "o": _params(a.o_proj), "down": _params(m.down_proj)}
        fused.append(f)
    mx.eval([[v for v in f.values()] for f in fused])
    return fused


def make_step(llm, fused=None, compiled=True):
    """step(token[1], write_idx[1], kv_valid[1, L], keys, values) over fixed buffers."""
    import mlx.core as mx
    import mlx.nn as nn

    def layer_step(i, layer, x, kb, vb, pos, widx, mask):
        a = layer.self_attn
        h = layer.input_layernorm(x)
        b = x.shape[0]
        if fused is None:
            q, k, v = a.q_proj(h), a.k_proj(h), a.v_proj(h)
        else:
            qkv = _proj(h, fused[i]["qkv"])
            nq, nk = a.n_heads * a.head_dim, a.n_kv * a.head_dim
            q, k, v = qkv[..., :nq], qkv[..., nq:nq + nk], qkv[..., nq + nk:]
        q = a.q_norm(q.reshape(b, 1, a.n_heads, -1)).transpose(0, 2, 1, 3)
        k = a.k_norm(k.reshape(b, 1, a.n_kv, -1)).transpose(0, 2, 1, 3)
        v = v.reshape(b, 1, a.n_kv, -1).transpose(0, 2, 1, 3)
        q = mx.fast.rope(q, a.head_dim, traditional=False, base=a.rope_theta, scale=1.0, offset=pos)
        k = mx.fast.rope(k, a.head_dim, traditional=False, base=a.rope_theta, scale=1.0, offset=pos)
        kb = mx.slice_update(kb, k.astype(kb.dtype), widx, axes=(2,))
        vb = mx.slice_update(vb, v.astype(vb.dtype), widx, axes=(2,))
        o = mx.fast.scaled_dot_product_attention(q, kb, vb, scale=a.head_dim ** -0.5, mask=mask)
        o = o.transpose(0, 2, 1, 3).reshape(b, 1, -1)
        x = x + (a.o_proj(o) if fused is None else _proj(o, fused[i]["o"]))
        h = layer.post_attention_layernorm(x)
        m = layer.mlp
        if fused is None:
            y = m(h)
        else:
            gu = _proj(h, fused[i]["gate_up"])
            n = gu.shape[-1] // 2
            y = _proj(nn.silu(gu[..., :n]) * gu[..., n:], fused[i]["down"])
        return x + y, kb, vb

    def step(token, widx, kv_valid, keys, values):
        length = kv_valid.shape[1]
        mask = (kv_valid & (mx.arange(length)[None, :] <= widx))[:, None, None, :]
        x = llm.embed(token[:, None])
        nk, nv = [], []
        for i, layer in enumerate(llm.model.layers):
            x, kb, vb = layer_step(i, layer, x, keys[i], values[i], widx, widx, mask)
            nk.append(kb)
            nv.append(vb)
        return mx.argmax(llm.logits(llm.model.norm(x)[:, -1]), axis=-1), nk, nv

    return mx.compile(step) if compiled else step


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

    import funasr_nano
    from funasr_nano.fast_decode import StaticKV

    asr = funasr_nano.load(model, preset=preset)
    llm = asr.net.llm
    d = llm.cfg.hidden_size
    rows = []

    def add(variant, ms, note=""):
        rows.append({"preset": preset, "variant": variant, "ms_per_step": round(ms, 3),
                     "tok_per_s": round(1e3 / ms, 1) if ms > 0 else None, "note": note})
        print(f"  {preset:6s} {variant:14s} {ms:8.3f} ms  {1e3 / ms:7.1f}/s  {note}", flush=True)

    emb = (mx.random.normal((1, prompt, d), key=mx.random.key(0)) * 0.02).astype(asr.dtype)

    def prefill():
        cache = asr.new_cache()
        h = llm.hidden(emb, cache, positions=0, mask="causal")
        tok = mx.argmax(llm.logits(h[:, -1]), axis=-1)
        mx.eval(tok, [c.state for c in cache])
        return cache, tok

    # kvcache: the uncompiled path
    for variant, fz in (("kvcache", None),):
        cache, tok = prefill()

        def adv(t, cache=cache):
            h = llm.hidden(llm.embed(t[:, None]), cache, positions=cache[0].offset, mask=None)
            return mx.argmax(llm.logits(h[:, -1]), axis=-1)

        add(variant, _time_loop(tok, adv, steps))

    fused = fused_weights(llm)
    for variant, fz, comp in (("static", None, True), ("static-fused", fused, True),
                              ("static-uncompiled", None, False)):
        cache, tok = prefill()
        kv = StaticKV(cache, prompt + steps + 16)
        state = {"k": kv.keys, "v": kv.values, "pos": prompt}
        valid = mx.ones((1, kv.length), dtype=mx.bool_)
        fn = make_step(llm, fz, comp)

        def adv(t, fn=fn, state=state, valid=valid):
            nxt, state["k"], state["v"] = fn(t.astype(mx.int32), mx.array([state["pos"]], dtype=mx.int32),
                                             valid, state["k"], state["v"])
            state["pos"] += 1
            return nxt

        add(variant, _time_loop(tok, adv, steps))
        del kv, state

    # only the matrix products
    layers = llm.model.layers
    plain = [{"q": _params(l.self_attn.q_proj), "k": _params(l.self_attn.k_proj),
              "v": _params(l.self_attn.v_proj), "o": _params(l.self_attn.o_proj),
              "gate": _params(l.mlp.gate_proj), "up": _params(l.mlp.up_proj),
              "down": _params(l.mlp.down_proj)} for l in layers]

    def gemv_plain(x):
        for p in plain:
            q, k, v = _proj(x, p["q"]), _proj(x, p["k"]), _proj(x, p["v"])
            x = x + _proj(q + mx.concatenate([k, v], axis=-1), p["o"])
            x = x + _proj(_proj(x, p["gate"]) * _proj(x, p["up"]), p["down"])
        return llm.logits(x)

    def gemv_fused(x):
        for f in fused:
            qkv = _proj(x, f["qkv"])
            n = qkv.shape[-1] // 2
            x = x + _proj(qkv[..., :n] + qkv[..., n:], f["o"])
            gu = _proj(x, f["gate_up"])
            n = gu.shape[-1] // 2
            x = x + _proj(gu[..., :n] * gu[..., n:], f["down"])
        return llm.logits(x)

    for variant, fn in (("gemv", gemv_plain), ("gemv-fused", gemv_fused)):
        x0 = mx.zeros((1, d), dtype=asr.dtype)

        def adv(t, fn=fn, x0=x0):
            return mx.argmax(fn(x0 + t[:, None].astype(x0.dtype) * 0), axis=-1)

        add(variant, _time_loop(mx.array([0]), adv, steps), "matrix products only")

    # cost of one small op
    a = mx.zeros((1, d), dtype=mx.float32)

    def chain(t):
        y = a + t[:, None].astype(a.dtype) * 0
        for _ in range(500):
            y = y * 1.0001 + 1e-6
        return mx.argmax(y, axis=-1)

    ms = _time_loop(mx.array([0]), chain, max(8, steps // 4))
    add("launch", ms / 1000, "per element-wise op (1000 ops chained)")
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
        from pathlib import Path

        from funasr_nano.synthetic import write_synthetic_checkpoint

        base = Path(os.environ.get("FUNASR_NANO_CACHE", Path.home() / ".cache" / "funasr_nano"))
        name = "tiny" if a.tiny else "real"
        a.model = str(base / f"synthetic-{name}-seed0")
        if not (Path(a.model) / "model.pt").is_file():
            write_synthetic_checkpoint(a.model, name, 0)
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
