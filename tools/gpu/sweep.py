"""Batch x audio-length x precision sweep of the MLX port through its public API.

    python tools/gpu/sweep.py --model DIR [--preset bf16 --preset q4 ...] [--batch 1 --batch 8 ...]
        [--seconds 5 --seconds 10 ...] [--repeats 2] [--budget-s 300] [--json F] [--md F]

Every variant (a preset, optionally with a backend-policy override: ``--policy``, ``--variant
"q4|dequant_min_rows=never"``) is loaded first; then for every batch size and clip length each
variant runs ``asr.transcribe_batch(clips, max_new_tokens=N, ignore_eos=True)``, interleaved
(A B C A B C ...: later rows of a sequential run were measured slower on the GPU):

* **Pinned decode length**: N = ``--tokens-per-second`` (default 4, the asv suite's
  ``TOKENS_PER_SECOND``) x clip seconds, EOS ignored, so every row of every batch decodes exactly N
  tokens whatever the (synthetic) weights say: 20 / 40 / 120 tokens for 5 / 10 / 30 s.
* **Warm-up**: one call with 4 new tokens per (variant, batch, length) before timing (same
  frontend / encoder / prefill shapes; first-call kernel compilation stays out of the numbers),
  then ``--repeats`` (default 3) timed calls (``--big-repeats``, default 2, where batch x seconds >=
  ``--big-audio-s``, default 240); the median is reported with min-max (all walls in the JSON).
* **Clips**: ``speech_like(seconds, seed=k)`` for k < 4, generated once per length; row i of a
  batch is clip i % 4 circularly shifted by 0.1 s x (i // 4), so rows differ without paying the
  generator (~2 s per 30 s clip on a slow CPU) for each of 32 rows. All rows have the same length.
* The API evaluates every stage (``mx.eval``) before its timer stops; stage times come from
  ``Transcription.timings``.

Reported per configuration (JSON rows; the Markdown table shows the main ones):

``wall_s``            the call, measured outside it
``rtf`` / ``rtfx``    wall / (batch x seconds) and its inverse (audio seconds per wall second)
``ms_per_token``      decode seconds / decode steps (one step = one new token for every row)
``decode_tok_s``      batch x decode steps / decode seconds (tokens per second, all rows)
``e2e_tok_s``         batch x N / wall
``prefill_ms``        prefill (prompt through the decoder + first token), and per prompt token
``frontend_ms`` ``encoder_ms`` ``adaptor_ms`` ``prompt_ms`` ``postprocess_ms``   the other stages
``peak_bytes``        the variant's weights + the largest ``mx.get_peak_memory()`` above the memory
                      active before a timed call (other loaded variants' weights excluded)
``weight_bytes``      ``mx.get_active_memory()`` added by loading the variant

``--budget-s`` stops starting new configurations once the elapsed time passes it (the rest are
listed as skipped), so the sweep fits a fixed device-call window; the order is batch-major, then
length, variants interleaved inside each.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from funasr_nano.io.formats import json_safe  # noqa: E402

N_BASE_CLIPS = 4
WARMUP_TOKENS = 4




def pinned_tokens(seconds: float, tps: float) -> int:
    return max(2, int(round(tps * seconds)))


def make_clips(seconds: float, batch: int, cache: dict) -> list:
    from funasr_nano.synthetic.signals import speech_like

    if seconds not in cache:
        cache[seconds] = [speech_like(seconds, seed=k) for k in range(N_BASE_CLIPS)]
    base = cache[seconds]
    shift = 1600  # 0.1 s at 16 kHz
    return [np.ascontiguousarray(np.roll(base[i % N_BASE_CLIPS], shift * (i // N_BASE_CLIPS)))
            for i in range(batch)]


def env_info() -> dict:
    import mlx.core as mx

    out = {"mlx_version": mx.__version__, "default_device": str(mx.default_device()),
           "platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        from funasr_nano.runtime.platform_info import backend_info

        bi = backend_info()
        out.update(backend=bi.get("backend"), device_name=bi.get("device_name"))
        if bi.get("backend") == "cpu":
            out["blas"] = bi.get("blas")
    except Exception as e:  # pragma: no cover - informational only
        out["backend_error"] = repr(e)
    return out


def one_run(asr, wavs, n) -> dict:
    """One timed call; stage times, the peak of MLX memory above what was active before it."""
    import mlx.core as mx

    active = int(mx.get_active_memory())
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    res = asr.transcribe_batch(wavs, max_new_tokens=n, ignore_eos=True)
    wall = time.perf_counter() - t0
    ntok = [len(x.tokens) for x in res]
    if any(k != n for k in ntok):
        raise RuntimeError(f"pinned decode broken: rows produced {sorted(set(ntok))} tokens, expected {n}")
    r = res[0]
    return {"wall": wall, "timings": dict(r.timings), "steps": r.decode_steps, "prompt_tokens": r.prompt_tokens,
            "audio_tokens": r.n_audio_tokens, "audio_s": r.batch_audio_seconds,
            "transient_bytes": int(mx.get_peak_memory()) - active}


def _stat(xs) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def summarize(v, batch, seconds, n, runs, weight_bytes) -> dict:
    """A row from the timed runs of one variant: medians (and min-max) over the repeats."""
    t = lambda k: [1000 * x["timings"].get(k, 0.0) for x in runs]  # noqa: E731
    walls = [x["wall"] for x in runs]
    steps = runs[0]["steps"]
    audio_s = runs[0]["audio_s"] or batch * seconds
    mspt = [1000 * x["timings"]["decode"] / steps for x in runs] if steps else [float("nan")]
    wall = statistics.median(walls)
    enc = [a + b for a, b in zip(t("encoder"), t("adaptor"))]
    return {
        "variant": v["label"], "preset": v["preset"], "plan": v["plan"], "policy": v["policy"],
        "batch": batch, "seconds": seconds, "audio_s": audio_s, "tokens": n, "repeats": len(runs),
        "prompt_tokens": runs[0]["prompt_tokens"], "audio_tokens": runs[0]["audio_tokens"], "decode_steps": steps,
        "wall_s": wall, "wall": _stat(walls), "wall_all_s": walls,
        "rtf": wall / audio_s, "rtfx": audio_s / wall,
        "ms_per_token": statistics.median(mspt), "ms_per_token_stat": _stat(mspt),
        "decode_tok_s": 1000 * batch / statistics.median(mspt) if steps else float("nan"),
        "e2e_tok_s": batch * n / wall,
        "prefill_ms": statistics.median(t("prefill")), "prefill_stat": _stat(t("prefill")),
        "frontend_ms": statistics.median(t("frontend")), "encoder_ms": statistics.median(t("encoder")),
        "adaptor_ms": statistics.median(t("adaptor")), "encoder_adaptor_stat": _stat(enc),
        "prompt_ms": statistics.median(t("prompt")), "decode_ms": statistics.median(t("decode")),
        "postprocess_ms": statistics.median(t("postprocess")),
        # The variant's own weights plus the call's working set: other loaded variants excluded.
        "peak_bytes": weight_bytes + max(x["transient_bytes"] for x in runs),
        "weight_bytes": weight_bytes,
    }


def _f(v, spec) -> str:
    return "" if v is None else format(v, spec)


def fmt_md(rows: list, env: dict, meta: dict) -> str:
    lines = [
        f"MLX {env.get('mlx_version')} on {env.get('backend')} ({env.get('device_name')}); {meta['weights']}; "
        f"pinned decode {meta['tokens_per_second']:g} tokens per audio second, EOS ignored; median (min-max) of "
        f"{meta['repeats']} timed runs after a warm-up ({meta['big_repeats']} where batch x seconds >= "
        f"{meta['big_audio_s']:g}), variants interleaved within each configuration (A B C A B C ...).",
        f"Policies: {'; '.join(f'{k} = {v}' for k, v in meta.get('policies', {}).items())}.",
        "Peak MB: the variant's weights plus the call's working set (`mx.get_peak_memory` above the memory "
        "active before the call).",
        "",
        "| variant | batch | audio s | tokens | wall s | RTFx | ms/token (min-max) | decode tok/s | e2e tok/s "
        "| prefill ms | frontend ms | encoder+adaptor ms | peak MB | top-1 vs fp32 | KL vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if meta.get("fidelity"):
        lines.insert(1, f"Fidelity: {meta['fidelity']}.")
    for r in rows:
        if r.get("skipped") or r.get("error"):
            lines.append(f"| {r['variant']} | {r['batch']} | {r['seconds']:g} | | "
                         f"{'skipped: ' + r['skipped'] if r.get('skipped') else 'error: ' + r['error'][:80]} "
                         "| | | | | | | | | | |")
            continue
        ms = r["ms_per_token_stat"]
        lines.append(
            f"| {r['variant']} | {r['batch']} | {r['seconds']:g} | {r['tokens']} | {r['wall_s']:.3f} "
            f"| {r['rtfx']:.1f} | {r['ms_per_token']:.2f} ({ms['min']:.2f}-{ms['max']:.2f}) "
            f"| {r['decode_tok_s']:.0f} | {r['e2e_tok_s']:.0f} "
            f"| {r['prefill_ms']:.1f} | {r['frontend_ms']:.0f} | {r['encoder_ms'] + r['adaptor_ms']:.1f} "
            f"| {r['peak_bytes'] / 1e6:.0f} | {_f(r.get('top1_vs_fp32'), '.3f')} | {_f(r.get('kl_vs_fp32'), '.2e')} |")
    return "\n".join(lines) + "\n"


def parse_variants(args) -> list[dict]:
    """--preset x --policy, plus explicit --variant "PRESET|POLICY" entries, in order."""
    out = []
    for p in args.preset or (["bf16", "q4", "fp32"] if not args.variant else []):
        for pol in args.policy or [None]:
            out.append((p, pol))
    for v in args.variant or []:
        p, _, pol = v.partition("|")
        out.append((p.strip(), pol.strip() or None))
    return [{"preset": p, "policy_spec": pol, "label": p if pol is None else f"{p} [{pol}]"} for p, pol in out]


def _parse_args(argv):
    """The command line (one linear argparse definition; see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint directory")
    ap.add_argument("--preset", action="append", default=None, help="precision preset(s) (default bf16, q4, fp32)")
    ap.add_argument("--policy", action="append", default=None,
                    help="backend-policy override(s) (funasr_nano.runtime.backend), crossed with --preset; "
                         "e.g. 'dequant_min_rows=never' (default: this backend's policy)")
    ap.add_argument("--variant", action="append", default=None,
                    help="one extra variant 'PRESET|POLICY', e.g. 'q4|quant_compute=fp32' (repeatable)")
    ap.add_argument("--batch", action="append", type=int, default=None, help="batch size(s) (default 1, 8, 32)")
    ap.add_argument("--seconds", action="append", type=float, default=None, help="clip length(s) (default 5, 10, 30)")
    ap.add_argument("--tokens-per-second", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big-audio-s", type=float, default=240.0,
                    help="configurations with batch x seconds >= this run --big-repeats timed calls")
    ap.add_argument("--big-repeats", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=0.0, help="start no configuration after this many seconds")
    ap.add_argument("--require-gpu", action="store_true")
    ap.add_argument("--fidelity-tokens", type=int, default=16,
                    help="teacher-forced fidelity vs fp32 per preset on a 5 s clip over this many tokens (0: off)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--md", default=None)
    return ap.parse_args(argv)


def _fidelity_reference(args, variants, meta):
    """The fp32 teacher-forced reference the other presets are scored against (None when
    --fidelity-tokens is 0 or every variant is fp32); the fp32 model is freed once its logits exist."""
    if not (args.fidelity_tokens and any(v["preset"] != "fp32" for v in variants)):
        return None
    import mlx.core as mx

    import funasr_nano
    from funasr_nano.bench.fidelity import TeacherForcedReference
    from funasr_nano.synthetic.signals import speech_like

    ref_asr = funasr_nano.load(args.model, preset="fp32")
    fid_ref = TeacherForcedReference(ref_asr, speech_like(5.0, seed=11), n_tokens=args.fidelity_tokens)
    mx.eval(fid_ref.logits)
    del ref_asr
    gc.collect()
    mx.clear_cache()
    meta["fidelity"] = (f"teacher-forced vs fp32 on a 5 s speech-like clip, {args.fidelity_tokens} tokens "
                        "(funasr_nano.bench.fidelity.teacher_forced_fidelity)")
    return fid_ref


def _load_variants(args, variants, fid_ref, loads: dict) -> dict:
    """{(preset, quantized compute dtype): model, or the exception that stopped its load}; fills `loads`
    (load time, weight bytes, plan, fidelity) and each variant's "key", "pol" and "plan".

    One load per (preset, quantized compute dtype); variants that differ only in other policy
    fields share it and switch `asr.policy` before each call."""
    import mlx.core as mx

    import funasr_nano
    from funasr_nano.runtime.backend import resolve_policy

    models = {}
    for v in variants:
        pol = resolve_policy(v["policy_spec"])
        key = (v["preset"], pol.quant_compute)
        if key not in models:
            active = int(mx.get_active_memory())
            t0 = time.perf_counter()
            try:
                asr = funasr_nano.load(args.model, preset=v["preset"], policy=pol)
            except Exception as e:  # e.g. a quantization mode this backend cannot run: a row says why
                models[key] = e
                print(f"[sweep] {v['label']}: cannot load: {type(e).__name__}: {e}", flush=True)
                continue
            info = {"load_s": time.perf_counter() - t0, "weight_bytes": int(mx.get_active_memory()) - active,
                    "plan": asr.plan.name}
            if fid_ref is not None:
                if asr.plan.name == "fp32":
                    info["fidelity"] = {"top1_agreement": 1.0, "mean_kl": 0.0}
                else:
                    from funasr_nano.bench.fidelity import teacher_forced_fidelity

                    fid = teacher_forced_fidelity(None, asr, reference=fid_ref)
                    info["fidelity"] = {k: fid[k] for k in ("top1_agreement", "mean_kl")}
            models[key] = asr
            loads[f"{v['preset']}@{pol.quant_compute}"] = info
            print(f"[sweep] loaded {v['preset']} (plan {info['plan']}) in {info['load_s']:.1f} s, "
                  f"{info['weight_bytes'] / 1e6:.0f} MB, fidelity {info.get('fidelity')}", flush=True)
        v["key"] = key
        v["pol"] = pol
        m = models[key]
        v["plan"] = m.plan.name if not isinstance(m, Exception) else None
    return models


def _measure_config(variants, models, wavs, n, reps) -> tuple[dict, dict]:
    """Warm every variant up, then `reps` interleaved timed calls (A B C A B C ...) -> (runs by label,
    error by label). A variant that fails (not loaded, out of memory at the largest batch ...) is
    recorded and left out of the later calls; the others go on."""
    import mlx.core as mx

    runs, errors = {v["label"]: [] for v in variants}, {}
    for v in variants:  # warm-up, in the same order
        m = models[v["key"]]
        if isinstance(m, Exception):
            errors[v["label"]] = f"cannot load: {type(m).__name__}: {m}"
            continue
        try:
            m.policy = v["pol"]
            m.transcribe_batch(wavs, max_new_tokens=WARMUP_TOKENS, ignore_eos=True)
        except Exception as e:  # e.g. out of memory at the largest batch: recorded, the rest go on
            errors[v["label"]] = f"{type(e).__name__}: {e}"
            mx.clear_cache()
    for _ in range(reps):
        for v in variants:  # interleaved: A B C A B C ...
            if v["label"] in errors:
                continue
            m = models[v["key"]]
            m.policy = v["pol"]
            try:
                runs[v["label"]].append(one_run(m, wavs, n))
            except Exception as e:
                errors[v["label"]] = f"{type(e).__name__}: {e}"
                mx.clear_cache()
    return runs, errors


def _config_rows(variants, loads, b, sec, n, runs, errors) -> list:
    """One row per variant for one (batch, length): its summary with fidelity, or its error (printed)."""
    rows = []
    for v in variants:
        if v["label"] in errors:
            rows.append({"variant": v["label"], "preset": v["preset"], "batch": b, "seconds": sec,
                         "error": errors[v["label"]]})
            print(f"[sweep] {v['label']} b={b} {sec:g}s ERROR {errors[v['label']]}", flush=True)
            continue
        info = loads[f"{v['preset']}@{v['pol'].quant_compute}"]
        row = summarize(v, b, sec, n, runs[v["label"]], info["weight_bytes"])
        if "fidelity" in info:
            row["top1_vs_fp32"] = info["fidelity"]["top1_agreement"]
            row["kl_vs_fp32"] = info["fidelity"]["mean_kl"]
        rows.append(row)
        print(f"[sweep] {v['label']} b={b} {sec:g}s: wall {row['wall_s']:.3f} s RTFx {row['rtfx']:.1f} "
              f"{row['ms_per_token']:.2f} ms/token prefill {row['prefill_ms']:.1f} ms peak "
              f"{row['peak_bytes'] / 1e6:.0f} MB", flush=True)
    return rows


def main(argv=None) -> int:
    args = _parse_args(argv)
    variants = parse_variants(args)
    batches = args.batch or [1, 8, 32]
    lengths = args.seconds or [5.0, 10.0, 30.0]

    from funasr_nano.runtime.backend import detect_backend, resolve_policy
    from funasr_nano.synthetic import is_synthetic

    env = env_info()
    print(f"[sweep] {env}", flush=True)
    if args.require_gpu and detect_backend() == "cpu":
        raise SystemExit(f"--require-gpu: MLX's default device is {env.get('default_device')}")
    weights = "synthetic weights (seeded random)" if is_synthetic(args.model) else f"weights: {args.model}"
    for v in variants:
        v["policy"] = resolve_policy(v["policy_spec"]).to_dict()
    meta = {"model": args.model, "weights": weights, "tokens_per_second": args.tokens_per_second,
            "repeats": args.repeats, "big_audio_s": args.big_audio_s, "big_repeats": args.big_repeats,
            "warmup_tokens": WARMUP_TOKENS, "variants": [v["label"] for v in variants], "batches": batches,
            "seconds": lengths, "clips": f"speech_like x {N_BASE_CLIPS} seeds, rows rolled by 0.1 s",
            "policies": {"default": resolve_policy().summary(),
                         **{v["label"]: resolve_policy(v["policy_spec"]).summary() for v in variants
                            if v["policy_spec"]}}}
    t_start = time.perf_counter()
    rows, loads, clip_cache = [], {}, {}

    def dump():
        if args.json:
            Path(args.json).write_text(json.dumps(json_safe({"env": env, "meta": meta, "loads": loads, "rows": rows,
                                                              "elapsed_s": time.perf_counter() - t_start}),
                                                  indent=2))
        if args.md:
            Path(args.md).write_text(fmt_md(rows, env, meta))

    fid_ref = _fidelity_reference(args, variants, meta)
    models = _load_variants(args, variants, fid_ref, loads)

    over = lambda: args.budget_s and time.perf_counter() - t_start > args.budget_s  # noqa: E731
    for b in batches:
        for sec in lengths:
            if over():
                rows += [{"variant": v["label"], "preset": v["preset"], "batch": b, "seconds": sec,
                          "skipped": "time budget"} for v in variants]
                continue
            t1 = time.perf_counter()
            wavs = make_clips(sec, b, clip_cache)
            n = pinned_tokens(sec, args.tokens_per_second)
            reps = args.big_repeats if b * sec >= args.big_audio_s else args.repeats
            runs, errors = _measure_config(variants, models, wavs, n, reps)
            rows += _config_rows(variants, loads, b, sec, n, runs, errors)
            print(f"[sweep] b={b} {sec:g}s done in {time.perf_counter() - t1:.1f} s", flush=True)
            dump()
    dump()
    print()
    print(fmt_md(rows, env, meta))
    print(f"[sweep] done in {time.perf_counter() - t_start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
