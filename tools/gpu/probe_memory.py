"""Where a batched call's peak memory comes from, stage by stage.

    python tools/gpu/probe_memory.py --model DIR [--preset bf16 --preset fp32] [--batch 32]
        [--seconds 10 --seconds 30] [--tokens 8] [--policy SPEC] [--json F]

For each preset x clip length it runs the stages of ``transcribe_batch`` one by one (frontend,
encoder, adaptor, prompt, prefill, decode) and records, per stage, the peak of MLX memory above
what was active when the stage started (``mx.reset_peak_memory`` before each), the memory left
active after it, and the largest single stage. Any backend; the numbers are MLX's allocator view
(``mx.get_peak_memory``), not the process RSS.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def stage_peaks(asr, wavs, tokens: int) -> dict:
    import mlx.core as mx

    from funasr_nano.runtime.decode import greedy_decode, left_pad

    out = {}

    def stage(name, fn):
        mx.synchronize()
        before = int(mx.get_active_memory())
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        r = fn()
        if isinstance(r, mx.array):
            mx.eval(r)
        mx.synchronize()
        out[name] = {"peak_above_start_mb": max(0, int(mx.get_peak_memory()) - before) / 1e6,
                     "active_after_mb": int(mx.get_active_memory()) / 1e6, "s": time.perf_counter() - t0}
        return r

    feats, lengths = stage("frontend", lambda: asr.batch_features(wavs))
    enc = stage("encoder", lambda: asr.encode(feats, lengths))
    full = stage("adaptor", lambda: asr.adapt(enc, lengths, truncate=False))  # noqa: F821
    del enc

    def prompt():
        auds = [full[i, : asr.n_audio_tokens(int(n))] for i, n in enumerate(lengths)]  # noqa: F821
        rows = [asr.embed_prompt(asr.prompt(a.shape[0]), a)[0] for a in auds]
        mx.eval(rows)
        return rows

    rows = stage("prompt", prompt)
    del full
    embeds, valid, offsets = left_pad(rows)
    if valid is not None:  # padded rows: the masked path of the decode loop, prefill and decode together
        stage("prefill+decode", lambda: greedy_decode(asr, embeds, valid, offsets, tokens, asr.stop_ids,
                                                             ignore_eos=True))
        out["prefill+decode"]["prompt_tokens"] = int(embeds.shape[1])
        return out
    cache = asr.new_cache()
    logits = stage("prefill", lambda: asr.prefill(embeds, cache))
    out["prefill"]["prompt_tokens"] = int(embeds.shape[1])

    def decode():
        tok = mx.argmax(logits, axis=-1)
        for _ in range(tokens):
            tok = mx.argmax(asr.decode_step(tok, cache), axis=-1)
            mx.eval(tok)
        return tok

    stage("decode", decode)
    out["decode"]["tokens"] = tokens
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--preset", action="append", default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", action="append", type=float, default=None)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--policy", action="append", default=None,
                    help="backend-policy override(s); each is measured (default: this backend's policy)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import mlx.core as mx

    import funasr_nano
    from funasr_nano.synthetic.signals import speech_like

    presets = args.preset or ["bf16", "fp32"]
    lengths = args.seconds or [10.0, 30.0]
    rows = []
    for p in presets:
        asr = funasr_nano.load(args.model, preset=p)
        weights = int(mx.get_active_memory())
        print(f"[mem] {p}: {weights / 1e6:.0f} MB active after load", flush=True)
        for pol in args.policy or [None]:
            asr.policy = pol
            print(f"[mem] policy {asr.policy.summary()}", flush=True)
            for s in lengths:
                base = [speech_like(s, seed=k) for k in range(4)]
                wavs = [base[i % 4] for i in range(args.batch)]
                stage_peaks(asr, wavs[:2], 2)  # warm-up (kernels, allocator)
                mx.clear_cache()
                st = stage_peaks(asr, wavs, args.tokens)
                worst = max(st, key=lambda k: st[k]["peak_above_start_mb"])
                row = {"preset": p, "plan": asr.plan.name, "policy": asr.policy.to_dict(), "policy_spec": pol,
                       "batch": args.batch, "seconds": s, "weights_mb": weights / 1e6, "stages": st,
                       "largest_stage": worst,
                       "peak_total_mb": max(v["peak_above_start_mb"] + v["active_after_mb"] for v in st.values())}
                rows.append(row)
                print(f"[mem] {p} [{pol or 'default'}] b={args.batch} {s:g}s: " + ", ".join(
                    f"{k} +{v['peak_above_start_mb']:.0f} MB ({1000 * v['s']:.0f} ms)" for k, v in st.items())
                    + f"; largest: {worst}", flush=True)
                mx.clear_cache()
        del asr
        gc.collect()
        mx.clear_cache()
    if args.json:
        Path(args.json).write_text(json.dumps({"mlx": mx.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
