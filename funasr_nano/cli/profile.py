"""``funasr-nano profile``: one transcription, timed stage by stage."""

from __future__ import annotations

import sys
import time

from ..io import longform
from .errors import EXIT_FILES, EXIT_OK, EXIT_USAGE, CLIError
from .inputs import _file_error
from .model import check_language, check_preset, load_model, synthetic_banner
from .transcribe import _decode_opts


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def cmd_profile(args) -> int:
    import mlx.core as mx

    language = check_language(args.language)
    check_preset(args.preset)
    if args.warmup < 0:
        raise CLIError(EXIT_USAGE, f"--warmup must be >= 0, got {args.warmup}")
    _probe(args.file)
    mx.reset_peak_memory()
    asr, load_s = load_model(args)
    load_peak = mx.get_peak_memory()
    synthetic_banner(asr)
    wav, segs = _segments(asr, args)
    trs, wall, run_peak = _timed_run(asr, [s.slice(wav) for s in segs], args, language)
    prof, rows = _profile(asr, args, wav, segs, trs, load_s, wall, (load_peak, run_peak))
    if args.json:
        import json

        print(json.dumps(prof, ensure_ascii=False, indent=2))
    else:
        _print_profile(asr, args, prof, rows)
    return EXIT_OK


def _probe(path) -> None:
    """Read the header first: a bad file fails before the model loads."""
    from ..io.audio import audio_duration

    try:
        audio_duration(path)
    except Exception as e:
        raise CLIError(EXIT_FILES, _file_error(path, e)) from None


def _segments(asr, args):
    try:
        wav = asr.load_audio(args.file)
    except Exception as e:
        raise CLIError(EXIT_FILES, _file_error(args.file, e)) from None
    segs = longform.segments_of(wav, asr.cfg.frontend.fs, args.max_segment_seconds)
    if not segs:
        raise CLIError(EXIT_FILES, f"{args.file}: silent throughout; nothing to transcribe")
    return wav, segs


def _timed_run(asr, pieces, args, language):
    """(Transcriptions, wall seconds, MLX peak bytes) of one transcription after ``--warmup`` untimed ones."""
    import mlx.core as mx

    opts = _decode_opts(args, language)
    opts["ignore_eos"] = args.ignore_eos

    def once():
        if len(pieces) == 1:
            return [asr.transcribe(pieces[0], **opts)]
        return asr.transcribe_batch(pieces, **opts)

    try:
        for _ in range(args.warmup):
            once()
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        trs = once()
        wall = time.perf_counter() - t0
    except KeyboardInterrupt:
        raise
    except Exception as e:
        raise CLIError(EXIT_FILES, _file_error(args.file, e)) from None
    return trs, wall, mx.get_peak_memory()


def _stage_rows(trs, load_s: float, audio_s: float) -> list:
    """(stage, seconds, note) per stage, load first."""
    from ..runtime.asr import STAGES

    t, steps = trs[0].timings, trs[0].decode_steps
    n_prompt = sum(x.prompt_tokens for x in trs)
    rows = [("load", load_s, "")]
    for k in STAGES:
        if k not in t:
            continue
        extra = ""
        if k == "prefill" and t[k] > 0:
            extra = f"{n_prompt} prompt tokens, {n_prompt / t[k]:.1f} tok/s"
        elif k == "decode" and t[k] > 0:
            extra = f"{steps} steps, {steps / t[k]:.1f} tok/s, {1000 * t[k] / max(steps, 1):.1f} ms/step"
            if len(trs) > 1:
                extra += f" (batch of {len(trs)})"
        elif k == "encoder":
            extra = f"{audio_s / t[k]:.2f}x realtime" if t[k] > 0 else ""
        rows.append((k, t[k], extra))
    return rows


def _profile(asr, args, wav, segs, trs, load_s, wall, peaks) -> tuple[dict, list]:
    """The profile as JSON-ready data, and the stage rows it was made from."""
    from ..runtime.asr import STAGES

    audio_s = wav.shape[0] / asr.cfg.frontend.fs
    rows = _stage_rows(trs, load_s, audio_s)
    t, steps = trs[0].timings, trs[0].decode_steps
    compute = sum(t.get(k, 0.0) for k in STAGES)
    rss = _peak_rss_mb()
    prof = {
        "file": args.file,
        "model": asr.source,
        "synthetic_weights": bool(asr.synthetic),
        "preset": asr.preset,
        "dtype": str(asr.dtype).rsplit(".", 1)[-1],
        "policy": asr.policy.to_dict(),
        "audio_seconds": round(audio_s, 3),
        "segments": len(segs),
        "stages_ms": {name: round(1000 * sec, 3) for name, sec, _ in rows},
        "total_ms": round(1000 * compute, 3),
        "wall_ms": round(1000 * wall, 3),
        "rtf": round(compute / audio_s, 4) if audio_s else None,
        "prompt_tokens": sum(x.prompt_tokens for x in trs),
        "decode_tokens": sum(len(x.tokens) for x in trs),
        "decode_steps": steps,
        "decode_tokens_per_s": round(steps / t["decode"], 2) if t.get("decode") else None,
        "stop_reasons": [x.stop_reason for x in trs],
        "peak_memory_mb": {"mlx_load": round(peaks[0] / 2**20, 1), "mlx_transcribe": round(peaks[1] / 2**20, 1),
                           "process_rss": round(rss, 1) if rss else None},
        "text": longform.join(trs, longform.is_long(segs, wav.shape[0]))[0],
    }
    if asr.synthetic:
        from ..io.formats import SYNTHETIC_NOTE

        prof["note"] = SYNTHETIC_NOTE
    return prof, rows


def _print_profile(asr, args, prof: dict, rows: list) -> None:
    audio_s, compute = prof["audio_seconds"], prof["total_ms"] / 1000
    head = f"{args.file}: {audio_s:.2f} s audio"
    if prof["segments"] > 1:
        head += f" in {prof['segments']} segments (one batch)"
    head += f", model {asr.source}"
    if asr.synthetic:
        head += " [synthetic weights]"
    dt = prof["dtype"] + (f", preset {prof['preset']}" if prof["preset"] else "")
    print(f"{head} ({dt})")
    print(f"policy: {asr.policy.summary()}")
    print(f"{'stage':<12}{'ms':>11}  notes")
    for name, sec, extra in rows:
        print(f"{name:<12}{1000 * sec:>11.1f}  {extra}")
    print(f"{'total':<12}{1000 * compute:>11.1f}  excl. load; RTF {compute / audio_s:.3f}" if audio_s else "")
    mem = prof["peak_memory_mb"]
    rss = f", process peak RSS {mem['process_rss']:.0f} MiB" if mem["process_rss"] else ""
    print(f"peak memory: MLX {mem['mlx_transcribe']:.0f} MiB while transcribing, "
          f"{mem['mlx_load']:.0f} MiB while loading{rss}")
    text, n_tok = prof["text"], prof["decode_tokens"]
    shown = repr(text) if len(text) <= 200 else repr(text[:200]) + "..."
    print(f"output: {n_tok} token{'' if n_tok == 1 else 's'} (stop: {', '.join(prof['stop_reasons'])}): {shown}")
