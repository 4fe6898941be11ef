"""Batch-1 audio path, stage by stage: this project's presets beside funasr-mlx's encoder, interleaved.

    python tools/gpu/probe_encoder.py --model CKPT [--funasr-mlx FORM --funasr-mlx-site DIR]
        [--preset bf16 --preset fp16 ...] [--seconds 10] [--rounds 10] [--json F]

Why: on the H200 funasr-mlx's frontend + encoder + adaptor took 19-24 ms against this project's
30-53 ms (docs/measurements/h200-cuda-2026-12-02, sections 6-7). Each round times, for every side in
turn (A B C ... A B C ...), the frontend (waveform -> LFR features, evaluated), the encoder and the
adaptor (each evaluated on its own), after one warm-up per side; median and min-max in ms.
funasr-mlx (its own form, loaded from its --target dir) is timed as its frontend, then its encoder +
adaptor together (its `_audio_embeds` evaluates them as one graph).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _project_side(model, spec):
    import funasr_nano
    import mlx.core as mx

    preset, _, policy = spec.partition(":")  # "bf16" or "bf16:fsmn_conv=no"
    asr = funasr_nano.load(model, preset=preset, policy=policy or None)

    def run(wav):
        t0 = time.perf_counter()
        feats, lengths = asr.batch_features([wav])  # the policy's frontend, evaluated
        t1 = time.perf_counter()
        enc = asr.net.encode_audio(mx.array(feats).astype(asr.audio_dtype), None, asr.policy.encoder_eval_every)
        mx.eval(enc)
        t2 = time.perf_counter()
        ad, _ = asr.net.adapt(enc, None)
        mx.eval(ad)
        t3 = time.perf_counter()
        return {"frontend": t1 - t0, "encoder": t2 - t1, "adaptor": t3 - t2, "total": t3 - t0}

    return f"project {asr.preset}" + (f" [{policy}]" if policy else ""), run


def _funasr_mlx_side(form, site):
    sys.path.insert(0, site)
    import mlx.core as mx
    import numpy as np
    from funasr_mlx.frontend import FbankConfig, WavFrontend
    from funasr_mlx.llm_asr import LlmAsrTranscriber

    t = LlmAsrTranscriber(form, family="fun-asr-nano")
    dtype = t.model.audio_encoder._weight_dtype()
    front = WavFrontend(FbankConfig(frame_length=25.0, frame_shift=10.0, dither=0.0, window="hamming",
                                    n_mels=80, lfr_m=7, lfr_n=6), cmvn=None)

    def run(wav):
        t0 = time.perf_counter()
        fb = np.asarray(front(wav), dtype=np.float32)
        speech = mx.array(fb)[None].astype(dtype)
        mx.eval(speech)
        t1 = time.perf_counter()
        enc, _ = t.model.audio_encoder(speech, mx.array([fb.shape[0]], dtype=mx.int32))
        ad = t.model.audio_adaptor(enc)
        mx.eval(ad)
        t2 = time.perf_counter()
        return {"frontend": t1 - t0, "encoder+adaptor": t2 - t1, "total": t2 - t0}

    return f"funasr-mlx ({dtype})", run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="official checkpoint dir (this project's rows)")
    ap.add_argument("--preset", action="append", default=None, help="this project's presets, PRESET or PRESET:POLICY-OVERRIDE (default bf16, fp16)")
    ap.add_argument("--funasr-mlx", default=None, help="funasr-mlx form dir (tools/peers.py --prepare)")
    ap.add_argument("--funasr-mlx-site", default=None, help="its pip --target dir")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        ap.error("--rounds must be >= 1 and --seconds > 0")
    import funasr_nano  # noqa: F401  (before mlx.core: OpenBLAS on a Linux CPU)
    from funasr_nano.synthetic.signals import speech_like

    wav = speech_like(args.seconds, 0).astype("float32")
    sides = [_project_side(args.model, p) for p in (args.preset or ["bf16", "fp16"])]
    if args.funasr_mlx:
        sides.append(_funasr_mlx_side(args.funasr_mlx, args.funasr_mlx_site or ""))
    samples = {name: [] for name, _ in sides}
    for _, run in sides:
        run(wav)  # warm-up
    for _ in range(args.rounds):
        for name, run in sides:
            samples[name].append(run(wav))
    out = {}
    print(f"| side ({args.seconds:g} s clip, {args.rounds} interleaved rounds, ms) | stage | median | min-max |")
    print("|---|---|---|---|")
    for name, runs in samples.items():
        out[name] = {}
        for stage in runs[0]:
            v = [1000.0 * r[stage] for r in runs]
            out[name][stage] = {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
            print(f"| {name} | {stage} | {statistics.median(v):.1f} | {min(v):.1f}-{max(v):.1f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
