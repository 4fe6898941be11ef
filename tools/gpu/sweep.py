"""Batch x audio-length x precision sweep of the MLX port through its public API.

    python tools/gpu/sweep.py --model DIR [--preset bf16 --preset q4 ...] [--batch 1 --batch 8 ...]
        [--seconds 5 --seconds 10 ...] [--repeats 2] [--budget-s 300] [--json F] [--md F]

For every preset (outer loop: one load each), batch size and clip length it runs
``asr.transcribe_batch(clips, max_new_tokens=N, ignore_eos=True)``:

* **Pinned decode length**: N = ``--tokens-per-second`` (default 4, the asv suite's
  ``TOKENS_PER_SECOND``) x clip seconds, EOS ignored, so every row of every batch decodes exactly N
  tokens whatever the (synthetic) weights say: 20 / 40 / 120 tokens for 5 / 10 / 30 s.
* **Warm-up**: one call with 4 new tokens per (preset, batch, length) before timing (same
  frontend / encoder / prefill shapes; first-call kernel compilation stays out of the numbers),
  then ``--repeats`` timed calls (``--big-repeats``, default 1, where batch x seconds >=
  ``--big-audio-s``, default 240: those calls are long and dominated by the CPU frontend); the
  fastest is reported (all walls are in the JSON).
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
``peak_bytes``        ``mx.get_peak_memory()`` over the timed call (weights included)
``weight_bytes``      ``mx.get_active_memory()`` after loading

``--budget-s`` stops starting new configurations once the elapsed time passes it (the rest are
listed as skipped), so the sweep fits a fixed device-call window; the order is preset-major
(``--preset`` order), then batch, then length.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tools/
from compare_reference import _json_safe, best_of  # noqa: E402  (shared with the side-by-side tool)

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

N_BASE_CLIPS = 4
WARMUP_TOKENS = 4




def pinned_tokens(seconds: float, tps: float) -> int:
    return max(2, int(round(tps * seconds)))


def make_clips(seconds: float, batch: int, cache: dict) -> list:
    from funasr_nano.test_audio import speech_like

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
        from funasr_nano.platform_info import backend_info

        bi = backend_info()
        out.update(backend=bi.get("backend"), device_name=bi.get("device_name"))
        if bi.get("backend") == "cpu":
            out["blas"] = bi.get("blas")
    except Exception as e:  # pragma: no cover - informational only
        out["backend_error"] = repr(e)
    return out


def run_config(asr, preset, batch, seconds, tps, repeats, clip_cache) -> dict:
    wavs = make_clips(seconds, batch, clip_cache)
    n = pinned_tokens(seconds, tps)
    asr.transcribe_batch(wavs, max_new_tokens=WARMUP_TOKENS, ignore_eos=True)  # warm-up
    wall, res, peak, walls = best_of(lambda: asr.transcribe_batch(wavs, max_new_tokens=n, ignore_eos=True),
                                     repeats)
    r = res[0]
    t = r.timings
    audio_s = r.batch_audio_seconds or batch * seconds
    steps = r.decode_steps
    ntok = [len(x.tokens) for x in res]
    if any(k != n for k in ntok):
        raise RuntimeError(f"pinned decode broken: rows produced {sorted(set(ntok))} tokens, expected {n}")
    row = {
        "preset": preset, "batch": batch, "seconds": seconds, "audio_s": audio_s, "tokens": n,
        "prompt_tokens": r.prompt_tokens, "audio_tokens": r.n_audio_tokens, "decode_steps": steps,
        "wall_s": wall, "wall_all_s": walls, "wall_median_s": statistics.median(walls),
        "stage_sum_s": sum(t.get(k, 0.0) for k in ("frontend", "encoder", "adaptor", "prompt", "prefill",
                                                    "decode", "postprocess")),
        "rtf": wall / audio_s, "rtfx": audio_s / wall, "api_rtf": r.rtf,
        "ms_per_token": r.ms_per_token,
        "decode_tok_s": batch * steps / t["decode"] if t.get("decode") else float("nan"),
        "e2e_tok_s": batch * n / wall,
        "prefill_ms": 1000 * t["prefill"],
        "prefill_ms_per_prompt_token": 1000 * t["prefill"] / (batch * r.prompt_tokens),
        "frontend_ms": 1000 * t["frontend"], "encoder_ms": 1000 * t["encoder"], "adaptor_ms": 1000 * t["adaptor"],
        "prompt_ms": 1000 * t["prompt"], "decode_ms": 1000 * t["decode"], "postprocess_ms": 1000 * t["postprocess"],
        "peak_bytes": peak,
    }
    del res
    return row


def _f(v, spec) -> str:
    return "" if v is None else format(v, spec)


def fmt_md(rows: list, env: dict, meta: dict) -> str:
    lines = [
        f"MLX {env.get('mlx_version')} on {env.get('backend')} ({env.get('device_name')}); {meta['weights']}; "
        f"pinned decode {meta['tokens_per_second']:g} tokens per audio second, EOS ignored; best of "
        f"{meta['repeats']} after a warm-up ({meta['big_repeats']} where batch x seconds >= {meta['big_audio_s']:g}).",
        "",
        "| preset | batch | audio s | tokens | wall s | RTF | RTFx | ms/token | decode tok/s | e2e tok/s "
        "| prefill ms | frontend ms | encoder+adaptor ms | peak MB | top-1 vs fp32 | KL vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if meta.get("fidelity"):
        lines.insert(1, f"Fidelity: {meta['fidelity']}.")
    for r in rows:
        if r.get("skipped") or r.get("error"):
            lines.append(f"| {r['preset']} | {r['batch']} | {r['seconds']:g} | | "
                         f"{'skipped: ' + r['skipped'] if r.get('skipped') else 'error: ' + r['error'][:80]} "
                         "| | | | | | | | | | | |")
            continue
        lines.append(
            f"| {r['preset']} | {r['batch']} | {r['seconds']:g} | {r['tokens']} | {r['wall_s']:.3f} | {r['rtf']:.4f} "
            f"| {r['rtfx']:.1f} | {r['ms_per_token']:.2f} | {r['decode_tok_s']:.0f} | {r['e2e_tok_s']:.0f} "
            f"| {r['prefill_ms']:.1f} | {r['frontend_ms']:.0f} | {r['encoder_ms'] + r['adaptor_ms']:.1f} "
            f"| {r['peak_bytes'] / 1e6:.0f} | {_f(r.get('top1_vs_fp32'), '.3f')} | {_f(r.get('kl_vs_fp32'), '.2e')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint directory")
    ap.add_argument("--preset", action="append", default=None, help="precision preset(s) (default bf16, q4, fp32)")
    ap.add_argument("--batch", action="append", type=int, default=None, help="batch size(s) (default 1, 8, 32)")
    ap.add_argument("--seconds", action="append", type=float, default=None, help="clip length(s) (default 5, 10, 30)")
    ap.add_argument("--tokens-per-second", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--big-audio-s", type=float, default=240.0,
                    help="configurations with batch x seconds >= this run --big-repeats timed calls")
    ap.add_argument("--big-repeats", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=0.0, help="start no configuration after this many seconds")
    ap.add_argument("--require-gpu", action="store_true")
    ap.add_argument("--fidelity-tokens", type=int, default=16,
                    help="teacher-forced fidelity vs fp32 per preset on a 5 s clip over this many tokens (0: off)")
    ap.add_argument("--gpu-dequant-rows", type=int, default=None,
                    help="precision.DEQUANT_MIN_ROWS_GPU: quantized layers dequantize for calls with this many rows")
    ap.add_argument("--compiled", choices=("auto", "on", "off"), default="auto",
                    help="decode step: compiled fixed-buffer step, the growing-cache path, or the default choice")
    ap.add_argument("--json", default=None)
    ap.add_argument("--md", default=None)
    args = ap.parse_args(argv)
    presets = args.preset or ["bf16", "q4", "fp32"]
    batches = args.batch or [1, 8, 32]
    lengths = args.seconds or [5.0, 10.0, 30.0]

    import mlx.core as mx

    import funasr_nano
    from funasr_nano import precision
    from funasr_nano.synthetic import is_synthetic

    if args.gpu_dequant_rows is not None:
        precision.DEQUANT_MIN_ROWS_GPU = args.gpu_dequant_rows

    env = env_info()
    print(f"[sweep] {env}", flush=True)
    if args.require_gpu and mx.default_device().type != mx.gpu:
        raise SystemExit(f"--require-gpu: MLX's default device is {mx.default_device()}")
    weights = "synthetic weights (seeded random)" if is_synthetic(args.model) else f"weights: {args.model}"
    meta = {"model": args.model, "weights": weights, "tokens_per_second": args.tokens_per_second,
            "repeats": args.repeats, "big_audio_s": args.big_audio_s, "big_repeats": args.big_repeats, "warmup_tokens": WARMUP_TOKENS, "presets": presets,
            "compiled_decode": args.compiled, "gpu_dequant_rows": precision.DEQUANT_MIN_ROWS_GPU, "batches": batches,
            "seconds": lengths, "clips": f"speech_like x {N_BASE_CLIPS} seeds, rows rolled by 0.1 s"}
    t_start = time.perf_counter()
    rows, loads, clip_cache = [], {}, {}

    def dump():
        if args.json:
            Path(args.json).write_text(json.dumps(_json_safe({"env": env, "meta": meta, "loads": loads, "rows": rows,
                                                              "elapsed_s": time.perf_counter() - t_start}),
                                                  indent=2))
        if args.md:
            Path(args.md).write_text(fmt_md(rows, env, meta))

    fid_ref = None
    if args.fidelity_tokens and any(p != "fp32" for p in presets):
        from funasr_nano.fidelity import TeacherForcedReference
        from funasr_nano.test_audio import speech_like

        ref_asr = funasr_nano.load(args.model, preset="fp32")
        fid_ref = TeacherForcedReference(ref_asr, speech_like(5.0, seed=11), n_tokens=args.fidelity_tokens)
        mx.eval(fid_ref.logits)
        del ref_asr
        gc.collect()
        mx.clear_cache()
        meta["fidelity"] = (f"teacher-forced vs fp32 on a 5 s speech-like clip, {args.fidelity_tokens} tokens "
                            "(funasr_nano.fidelity.teacher_forced_fidelity)")

    over = lambda: args.budget_s and time.perf_counter() - t_start > args.budget_s  # noqa: E731
    for preset in presets:
        if over():
            rows += [{"preset": preset, "batch": b, "seconds": s, "skipped": "time budget"}
                     for b in batches for s in lengths]
            continue
        t0 = time.perf_counter()
        mx.reset_peak_memory()
        asr = funasr_nano.load(args.model, preset=preset)
        asr.compiled_decode = {"auto": None, "on": True, "off": False}[args.compiled]
        loads[preset] = {"load_s": time.perf_counter() - t0, "weight_bytes": int(mx.get_active_memory()),
                         "load_peak_bytes": int(mx.get_peak_memory())}
        print(f"[sweep] loaded {preset} in {loads[preset]['load_s']:.1f} s, "
              f"{loads[preset]['weight_bytes'] / 1e6:.0f} MB active", flush=True)
        fid = None
        if fid_ref is not None:
            if preset == "fp32":
                fid = {"top1_agreement": 1.0, "mean_kl": 0.0}
            else:
                from funasr_nano.fidelity import teacher_forced_fidelity

                fid = teacher_forced_fidelity(None, asr, reference=fid_ref)
            loads[preset]["fidelity"] = {k: fid[k] for k in ("top1_agreement", "mean_kl")}
            print(f"[sweep] {preset} fidelity vs fp32: top-1 {fid['top1_agreement']:.3f}, "
                  f"mean KL {fid['mean_kl']:.2e}", flush=True)
        for b in batches:
            for s in lengths:
                if over():
                    rows.append({"preset": preset, "batch": b, "seconds": s, "skipped": "time budget"})
                    continue
                t1 = time.perf_counter()
                try:
                    reps = args.big_repeats if b * s >= args.big_audio_s else args.repeats
                    row = run_config(asr, preset, b, s, args.tokens_per_second, reps, clip_cache)
                    row["weight_bytes"] = loads[preset]["weight_bytes"]
                    if fid is not None:
                        row["top1_vs_fp32"], row["kl_vs_fp32"] = fid["top1_agreement"], fid["mean_kl"]
                except Exception as e:  # record and go on (e.g. out of memory at the largest batch)
                    row = {"preset": preset, "batch": b, "seconds": s, "error": f"{type(e).__name__}: {e}"}
                    mx.clear_cache()
                rows.append(row)
                if "error" in row:
                    print(f"[sweep] {preset} b={b} {s:g}s ERROR {row['error']}", flush=True)
                else:
                    print(f"[sweep] {preset} b={b} {s:g}s: wall {row['wall_s']:.3f} s RTFx {row['rtfx']:.1f} "
                          f"{row['ms_per_token']:.2f} ms/token {row['decode_tok_s']:.0f} tok/s prefill "
                          f"{row['prefill_ms']:.1f} ms frontend {row['frontend_ms']:.0f} ms peak "
                          f"{row['peak_bytes'] / 1e6:.0f} MB ({time.perf_counter() - t1:.1f} s)", flush=True)
                dump()
        del asr
        gc.collect()
        mx.clear_cache()
    dump()
    print()
    print(fmt_md(rows, env, meta))
    print(f"[sweep] done in {time.perf_counter() - t_start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
