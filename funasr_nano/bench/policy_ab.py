"""``funasr-nano bench policy-ab``: measure every backend-policy choice both ways on this machine.

The defaults for Apple GPUs follow MLX's own practice and are not measured by the project (it has
no Apple hardware); this command is the first-run check a Mac user makes. For each choice of
`funasr_nano.runtime.backend.BackendPolicy` it runs the workload where the choice matters with the
default and with the alternative, interleaved (A B A B ...) after a warm-up of each, and prints a
Markdown table (median, min-max, ratio, verdict) that can be pasted into an issue as it is.

=====================  ===========================================  ============================
choice                 workload                                      metric
=====================  ===========================================  ============================
quant_compute          q4, one clip                                  ms per decoded token
dequant_min_rows       q4, a batch of --batch clips                  ms per decode step
compiled_decode_rows   the float preset, one clip                    ms per decoded token
step_ops               the float preset, one clip, compiled step     ms per decoded token
frontend               a batch of --batch clips                      frontend ms
encoder_eval_every     the float preset's encoder, --batch clips     peak MB above the weights
bf16_audio_compute     bf16, one clip                                encoder + adaptor ms
bf16_llm_compute       bf16, one clip, --tokens tokens               transcribe ms (prefill + decode)
fsmn_conv              the float preset's encoder + adaptor, one clip encoder + adaptor ms
=====================  ===========================================  ============================

The float preset is fp32 where quantized presets compute in fp32 (the CPU), else bf16. The two
``bf16_*_compute`` choices apply at load, so each side is its own loaded bf16 model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

VERDICT_MARGIN = 0.05  # the alternative must be this much faster before the default is called wrong


def _alternatives(p) -> dict:
    """{choice: (alternative policy, preset kind)} for the choices of policy `p`."""
    other_compute = "fp32" if p.quant_compute != "fp32" else "bf16"
    dense_alt = None if p.dequant_min_rows is not None else 16
    compiled_alt = 0 if p.compiled_decode_rows else 1
    return {
        "quant_compute": dataclasses.replace(p, quant_compute=other_compute),
        "dequant_min_rows": dataclasses.replace(p, dequant_min_rows=dense_alt),
        "compiled_decode_rows": dataclasses.replace(p, compiled_decode_rows=compiled_alt),
        "step_ops": dataclasses.replace(p, step_ops="fast" if p.step_ops == "tables" else "tables",
                                        compiled_decode_rows=max(p.compiled_decode_rows, 1)),
        "frontend": dataclasses.replace(p, frontend="mlx" if p.frontend == "numpy" else "numpy"),
        "encoder_eval_every": dataclasses.replace(p, encoder_eval_every=0 if p.encoder_eval_every else 10),
        "bf16_audio_compute": dataclasses.replace(p, bf16_audio_compute=_other_bf16(p.bf16_audio_compute)),
        "bf16_llm_compute": dataclasses.replace(p, bf16_llm_compute=_other_bf16(p.bf16_llm_compute)),
        "fsmn_conv": dataclasses.replace(p, fsmn_conv=not p.fsmn_conv),
    }


def _other_bf16(v: str) -> str:
    return "bf16" if v == "fp32" else "fp32"


def _value(p, choice) -> str:
    v = getattr(p, choice)
    if choice == "dequant_min_rows":
        return "never" if v is None else f">= {v} rows"
    if choice == "compiled_decode_rows":
        return "growing cache" if not v else f"compiled <= {v} rows"
    if choice == "encoder_eval_every":
        return "one graph" if not v else f"every {v} layers"
    if choice == "fsmn_conv":
        return "grouped conv1d" if v else "shifted multiply-adds"
    return str(v)


def _decode_ms(asr, embeds, tokens) -> float:
    from ..runtime.decode import greedy_decode, left_pad

    e, valid, offsets = left_pad(embeds)
    res = greedy_decode(asr, e, valid, offsets, tokens, asr.stop_ids, ignore_eos=True)
    return 1000.0 * res.decode_s / max(res.steps, 1)


def _frontend_ms(asr, wavs) -> float:
    t0 = time.perf_counter()
    asr.batch_features(wavs)
    return 1000.0 * (time.perf_counter() - t0)


def _encoder_peak_mb(asr, wavs, times=None) -> float:
    """Peak MLX memory above what was active while the encoder runs on a padded batch (and its
    time, appended to `times`)."""
    import mlx.core as mx

    from ..model import frontend as fe

    feats, lengths = fe.batch_features(wavs, asr.cfg.frontend)
    x = mx.array(feats)
    mx.eval(x)
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    mx.eval(asr.encode(x, lengths))
    if times is not None:
        times.append(1000.0 * (time.perf_counter() - t0))
    out = max(0, mx.get_peak_memory() - before) / 1e6
    mx.clear_cache()
    return out


def _audio_ms(asr, wav) -> float:
    """Encoder + adaptor ms of one clip (its features computed outside the timing)."""
    import mlx.core as mx

    x = mx.array(asr.features(wav))
    mx.eval(x)
    t0 = time.perf_counter()
    mx.eval(asr.adapt(asr.encode(x)))
    return 1000.0 * (time.perf_counter() - t0)


def _transcribe_ms(asr, wav, tokens) -> float:
    t0 = time.perf_counter()
    asr.transcribe(wav, max_new_tokens=tokens, ignore_eos=True)
    return 1000.0 * (time.perf_counter() - t0)


def _embeds(asr, wavs) -> list:
    from .fidelity import prompt_embeddings

    return [prompt_embeddings(asr, w)[0] for w in wavs]


def _ab(run, pol_a, pol_b, asr_a, asr_b, repeats, warm=None) -> tuple[list, list]:
    """Warm each side once (with `warm`, default `run`), then alternate A B A B ...; returns both
    sides' samples."""
    a, b = [], []
    for asr, pol in ((asr_a, pol_a), (asr_b, pol_b)):
        asr.policy = pol
        (warm or run)(asr)
    for _ in range(repeats):
        asr_a.policy = pol_a
        a.append(run(asr_a))
        asr_b.policy = pol_b
        b.append(run(asr_b))
    return a, b


def _run_choice(choice, base, alt, loaded, one, many, *, seconds, tokens, repeats, float_preset):
    """Run the workload where `choice` matters, default vs alternative -> (default samples, alternative
    samples, workload text, metric). `loaded(preset, policy)` gives the (cached) model."""
    if choice in ("quant_compute", "dequant_min_rows"):
        wavs = one if choice == "quant_compute" else many
        asr_a, asr_b = loaded("q4", base), loaded("q4", alt)
        emb = {id(asr_a): _embeds(asr_a, wavs)}
        emb.setdefault(id(asr_b), _embeds(asr_b, wavs) if asr_b is not asr_a else emb[id(asr_a)])
        a, b = _ab(lambda m: _decode_ms(m, emb[id(m)], tokens), base, alt, asr_a, asr_b, repeats,
                   warm=lambda m: _decode_ms(m, emb[id(m)], 4))
        workload = f"q4, {len(wavs)} x {seconds:g} s, {tokens} tokens"
        metric = "ms per decode step"
    elif choice in ("compiled_decode_rows", "step_ops"):
        asr = loaded(float_preset, base)
        emb = _embeds(asr, one)
        pol_a = base if choice == "compiled_decode_rows" else dataclasses.replace(
            base, compiled_decode_rows=max(base.compiled_decode_rows, 1))
        a, b = _ab(lambda m: _decode_ms(m, emb, tokens), pol_a, alt, asr, asr, repeats)
        workload = f"{float_preset}, 1 x {seconds:g} s, {tokens} tokens" + (
            ", compiled step" if choice == "step_ops" else "")
        metric = "ms per decoded token"
    elif choice == "frontend":
        asr = loaded(float_preset, base)
        a, b = _ab(lambda m: _frontend_ms(m, many), base, alt, asr, asr, repeats)
        workload = f"frontend, {len(many)} x {seconds:g} s"
        metric = "frontend ms"
    elif choice == "bf16_audio_compute":
        asr_a, asr_b = loaded("bf16", base), loaded("bf16", alt)
        a, b = _ab(lambda m: _audio_ms(m, one[0]), base, alt, asr_a, asr_b, repeats)
        workload = f"bf16 ({asr_a.preset} vs {asr_b.preset}), 1 x {seconds:g} s"
        metric = "encoder + adaptor ms"
    elif choice == "fsmn_conv":
        asr = loaded(float_preset, base)
        a, b = _ab(lambda m: _audio_ms(m, one[0]), base, alt, asr, asr, repeats)
        workload = f"{float_preset} encoder + adaptor, 1 x {seconds:g} s"
        metric = "encoder + adaptor ms"
    elif choice == "bf16_llm_compute":
        asr_a, asr_b = loaded("bf16", base), loaded("bf16", alt)
        a, b = _ab(lambda m: _transcribe_ms(m, one[0], tokens), base, alt, asr_a, asr_b, repeats,
                   warm=lambda m: _transcribe_ms(m, one[0], 2))
        workload = f"bf16 ({asr_a.preset} vs {asr_b.preset}), 1 x {seconds:g} s, {tokens} tokens"
        metric = "transcribe ms"
    else:  # encoder_eval_every: memory is the point, the time is reported beside it
        asr = loaded(float_preset, base)
        ta, tb = [], []
        a, b = _ab(lambda m: _encoder_peak_mb(m, many, ta if m.policy == base else tb), base, alt, asr, asr,
                   repeats)
        workload = (f"{float_preset} encoder, {len(many)} x {seconds:g} s; encoder ms "
                    f"{statistics.median(ta):.1f} vs {statistics.median(tb):.1f}")
        metric = "peak MB above the weights"
    return a, b, workload, metric


def _row(choice, base, alt, a, b, workload, metric) -> dict:
    """One table row: both sides' samples and medians, their ratio and the verdict."""
    ma, mb = statistics.median(a), statistics.median(b)
    ratio = mb / ma if ma > 0 else float("nan")
    if choice == "step_ops" and not base.compiled_decode_rows:
        verdict = "only used by the compiled step (off by default here)"
    elif ratio < 1 - VERDICT_MARGIN:
        verdict = f"ALTERNATIVE FASTER ({1 / ratio:.2f}x): please report"
    else:
        verdict = "default holds"
    return {"choice": choice, "workload": workload, "metric": metric,
            "default": _value(base, choice), "alternative": _value(alt, choice),
            "default_ms": a, "alternative_ms": b, "default_median": ma, "alternative_median": mb,
            "ratio_alt_over_default": ratio, "verdict": verdict}


def _environment(base, models, model_path, repeats) -> dict:
    """What the numbers ran on: backend, device, MLX, BLAS, the policy and its evidence, the weights
    (a tiny synthetic model is called a smoke test)."""
    import mlx.core as mx

    from ..runtime.platform_info import backend_info
    from ..runtime.backend import EVIDENCE
    from ..synthetic import is_synthetic

    tiny = any(m.cfg.llm.hidden_size < 1024 for m in models.values())
    weights = model_path
    if is_synthetic(model_path):
        weights = ("synthetic TINY test model: a smoke test, not a measurement" if tiny
                   else "synthetic (seeded random, real shapes)")
    info = backend_info()
    return {"backend": info.get("backend"), "device": info.get("device"), "device_name": info.get("device_name"),
            "mlx_version": mx.__version__, "platform": info.get("platform"), "blas": info.get("blas"),
            "policy": base.summary(), "evidence": EVIDENCE.get(base.backend),
            "weights": weights,
            "repeats": repeats}


def measure(model: str, repeats: int = 3, seconds: float = 5.0, tokens: int = 16, batch: int = 16,
            choices=None, policy=None, progress=print) -> dict:
    """Measure each choice both ways; returns {"env": ..., "rows": [...]} (see module docstring)."""
    import funasr_nano
    from ..runtime.backend import resolve_policy
    from ..synthetic.signals import speech_like

    base = resolve_policy(policy)
    alts = _alternatives(base)
    choices = list(choices or alts)
    unknown = [c for c in choices if c not in alts]
    if unknown:
        raise ValueError(f"unknown choice(s) {unknown}; choose from {list(alts)}")
    float_preset = "fp32" if base.quant_compute == "fp32" else "bf16"
    one = [speech_like(seconds, seed=1)]
    many = [speech_like(seconds, seed=k) for k in range(batch)]
    models: dict = {}

    model_path = str(model)

    def loaded(preset, pol):
        key = (preset, pol.quant_compute, pol.bf16_audio_compute, pol.bf16_llm_compute)  # the load-time fields
        if key not in models:
            progress(f"[policy-ab] loading {preset} (quantized compute {pol.quant_compute}, bf16 audio/llm "
                     f"compute {pol.bf16_audio_compute}/{pol.bf16_llm_compute}) ...")
            models[key] = funasr_nano.load(model_path, preset=preset, policy=pol)
        return models[key]

    rows = []
    for choice in choices:
        alt = alts[choice]
        t0 = time.perf_counter()
        a, b, workload, metric = _run_choice(choice, base, alt, loaded, one, many, seconds=seconds, tokens=tokens,
                                             repeats=repeats, float_preset=float_preset)
        row = _row(choice, base, alt, a, b, workload, metric)
        rows.append(row)
        progress(f"[policy-ab] {choice}: default {row['default_median']:.2f} vs alternative "
                 f"{row['alternative_median']:.2f} {metric} ({time.perf_counter() - t0:.0f} s)")
    return {"env": _environment(base, models, model_path, repeats), "rows": rows}


def to_markdown(result: dict) -> str:
    env = result["env"]
    lines = [
        f"`funasr-nano bench policy-ab` on {env['device_name']} ({env['backend']}, MLX {env['mlx_version']}"
        + (f", {env['blas']} BLAS" if env.get("blas") and env["backend"] == "cpu" else "") + ")",
        f"Policy: {env['policy']}. Defaults: {env['evidence']}.",
        f"Weights: {env['weights']}. Median (min-max) of {env['repeats']} interleaved runs per side after a "
        "warm-up; ratio = alternative / default (below 1: the alternative is faster).",
        "",
        "| choice | workload | default | alternative | default median (min-max) | alternative median (min-max) "
        "| ratio | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        a, b = r["default_ms"], r["alternative_ms"]
        lines.append(f"| {r['choice']} | {r['workload']} ({r['metric']}) | {r['default']} | {r['alternative']} "
                     f"| {r['default_median']:.2f} ({min(a):.2f}-{max(a):.2f}) "
                     f"| {r['alternative_median']:.2f} ({min(b):.2f}-{max(b):.2f}) "
                     f"| {r['ratio_alt_over_default']:.2f} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="funasr-nano bench policy-ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: the real-shaped synthetic model)")
    p.add_argument("--synthetic", choices=("real", "tiny"), default="real",
                   help="which synthetic model when --model is not given (tiny: a smoke test, not a measurement)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="clip length")
    p.add_argument("--tokens", type=int, default=16, help="decoded tokens per timed run")
    p.add_argument("--batch", type=int, default=16, help="clips in the batched workloads (dequantize, frontend)")
    p.add_argument("--choice", action="append", default=None, help="measure only this choice (repeatable)")
    p.add_argument("--policy", default=None, help="start from this policy instead of the detected one")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    for name in ("repeats", "tokens", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.seconds <= 0:
        p.error("--seconds must be > 0")
    model = args.model
    if model is None:
        from ..synthetic import ensure_synthetic

        model = str(ensure_synthetic(args.synthetic))
    try:
        result = measure(model, args.repeats, args.seconds, args.tokens, args.batch, args.choice, args.policy,
                         progress=lambda m: print(m, file=sys.stderr, flush=True))
    except ValueError as e:
        print(f"funasr-nano bench policy-ab: error: {e}", file=sys.stderr)
        return 2
    print(to_markdown(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
