"""Stage-by-stage and token-by-token parity with the official PyTorch implementation.

The reference (`funasr==1.4.16`, torch, float32, dither 0) is built with seeded random weights
by `tests/reference_harness.py`, saved by torch.save as a bf16 `model.pt` in the official
layout, and run on deterministic audio. This port then loads that same directory with its own
torch-free loader and must reproduce every recorded stage.

Error measure: relative Frobenius error ||ours - ref|| / ||ref||. Tolerances (float32):
frontend (fbank, LFR) 1e-5; encoder, adaptor, spliced embeddings, teacher-forced logits 1e-4.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

import funasr_nano
from funasr_nano.model import frontend as fe

from tests.support.optional import need
from tests.support.reference_harness import reference_checkpoint, reference_npz

need("torch")
need("funasr")  # the reference: the official PyTorch implementation

FRONTEND_TOL = 1e-5
MODEL_TOL = 1e-4
N_STEPS = 32


def rel_err(ours, ref) -> float:
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} != reference {ref.shape}"
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(ours - ref) / (denom if denom > 0 else 1.0))


_ASR = {}


def asr_for(preset: str):
    if preset not in _ASR:
        _ASR[preset] = funasr_nano.load(reference_checkpoint(preset, 0))
    return _ASR[preset]


EXTRA_CLIPS = {
    # Shorter than one 25 ms frame: the frame length shrinks to the clip (one fbank frame).
    "one_frame_350": lambda: __import__("funasr_nano.synthetic.signals", fromlist=["x"]).speech_like(1.0, 5)[:350],
}


def clip_audio(name: str) -> np.ndarray:
    from funasr_nano.synthetic.signals import standard_clips

    return EXTRA_CLIPS[name]() if name in EXTRA_CLIPS else standard_clips()[name]


def audio_of(rec) -> np.ndarray:
    return clip_audio(str(rec["_clip"]))


def record(preset, clip, **kw):
    audio = clip_audio(clip) if clip in EXTRA_CLIPS else None
    rec = reference_npz(preset, 0, clip, n_steps=N_STEPS, audio=audio, **kw)
    rec["_clip"] = np.asarray(clip)
    return rec


def teacher_forced_logits(asr, embeds: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Logits for each greedy step with the reference's tokens fed back, in one prefill."""
    x = mx.array(embeds)[None]
    fed = asr.net.llm.embed(mx.array(tokens[:-1].astype(np.int32))[None])
    logits = asr.prefill(mx.concatenate([x, fed], axis=1), asr.new_cache(), all_logits=True)
    s = embeds.shape[0]
    return np.array(logits[0, s - 1 : s - 1 + len(tokens)].astype(mx.float32))


def cached_step_logits(asr, embeds: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Same logits through the KV-cache path: prefill, then one decode step per token."""
    cache = asr.new_cache()
    out = [asr.prefill(mx.array(embeds)[None], cache)]
    for t in tokens[:-1]:
        out.append(asr.decode_step(mx.array([int(t)]), cache))
    return np.array(mx.concatenate(out, axis=0).astype(mx.float32))


def check_record(asr, rec, report):
    wav = audio_of(rec)
    name = f"{rec['_clip']}"

    # Frontend
    fb = fe.fbank(wav, asr.cfg.frontend)
    lfr = fe.apply_lfr(fb, asr.cfg.frontend.lfr_m, asr.cfg.frontend.lfr_n)
    errs = {"fbank": rel_err(fb, rec["fbank"]), "lfr": rel_err(lfr, rec["lfr"])}
    # The float32 MLX frontend (used on GPUs) must meet the same tolerance.
    lfr_mx, n_mx = fe.batch_features_mx([wav], asr.cfg.frontend)
    errs["lfr_mlx"] = rel_err(np.array(lfr_mx[0, : int(n_mx[0])]), rec["lfr"])

    # Encoder and adaptor, each on the reference's own input (isolates the stage) ...
    enc_iso = asr.encode(rec["lfr"])
    errs["encoder"] = rel_err(np.array(enc_iso[0]), rec["encoder_out"])
    ad_iso = asr.adapt(mx.array(rec["encoder_out"])[None], truncate=False)
    errs["adaptor"] = rel_err(np.array(ad_iso[0]), rec["adaptor_out"])
    # ... and chained from our own features (what transcribe() does).
    enc = asr.encode(lfr)
    errs["encoder_chained"] = rel_err(np.array(enc[0]), rec["encoder_out"])
    aud = asr.adapt(enc)
    n_audio = int(rec["fake_token_len"])
    assert aud.shape[1] == n_audio == math.ceil(lfr.shape[0] / 8)

    # Prompt ids and splice
    prompt = asr.prompt(n_audio, **rec["_prompt_kw"])
    assert prompt.ids == rec["prompt_ids"].tolist(), "prompt token ids differ from the reference"
    assert prompt.audio_start == int(rec["fbank_beg"])
    emb = asr.embed_prompt(prompt, aud)
    errs["inputs_embeds"] = rel_err(np.array(emb[0]), rec["inputs_embeds"])

    # Decoder: teacher-forced on the reference's embeddings and tokens, whole-sequence and cached
    greedy = rec["greedy_tokens"]
    tf = teacher_forced_logits(asr, rec["inputs_embeds"], greedy)
    errs["logits_teacher_forced"] = max(rel_err(tf[i], rec["step_logits"][i]) for i in range(len(greedy)))
    kv = cached_step_logits(asr, rec["inputs_embeds"], greedy)
    errs["logits_kv_cache"] = max(rel_err(kv[i], rec["step_logits"][i]) for i in range(len(greedy)))

    # Free-running greedy decode from the waveform, EOS ignored
    res = asr.transcribe(wav, max_new_tokens=len(greedy), ignore_eos=True, **rec["_prompt_kw"])
    margins = rec["top2_margin"]
    close = [i for i in range(len(greedy)) if margins[i] < 1e-3]
    report.append((name, errs, close))

    for stage, tol in [("fbank", FRONTEND_TOL), ("lfr", FRONTEND_TOL), ("lfr_mlx", FRONTEND_TOL)]:
        assert errs[stage] < tol, f"{name} {stage}: rel err {errs[stage]:.3g} >= {tol}"
    for stage in ("encoder", "adaptor", "encoder_chained", "inputs_embeds", "logits_teacher_forced",
                  "logits_kv_cache"):
        assert errs[stage] < MODEL_TOL, f"{name} {stage}: rel err {errs[stage]:.3g} >= {MODEL_TOL}"
    first_diff = next((i for i, (a, b) in enumerate(zip(res.tokens, greedy.tolist())) if a != b), None)
    assert first_diff is None and len(res.tokens) == len(greedy), (
        f"{name}: greedy tokens diverge at step {first_diff} (reference top-2 margin there "
        f"{margins[first_diff] if first_diff is not None else 'n/a'}); steps with margin < 1e-3: {close}")

    # End to end with EOS honoured: same text and post-processing as the reference's inference()
    res = asr.transcribe(wav, max_new_tokens=len(greedy), **rec["_prompt_kw"])
    assert res.text == str(rec["reference_text"])
    assert res.text_tn == str(rec["reference_text_tn"])


PROMPTS = {
    "default": {},
    "english_no_itn": {"language": "英文", "itn": False},
    "hotwords_zh": {"hotwords": ["开放时间", "滨海新区"], "language": "中文"},
}


def _run(preset, clip, prompt_name):
    kw = PROMPTS[prompt_name]
    rec = record(preset, clip, **kw)
    rec["_prompt_kw"] = kw
    report = []
    check_record(asr_for(preset), rec, report)
    name, errs, close = report[0]
    print(f"\n[{preset}/{clip}/{prompt_name}] " + " ".join(f"{k}={v:.2e}" for k, v in errs.items())
          + f" low-margin-steps={close}")


@pytest.mark.parametrize("clip", ["one_frame_350", "short_0p6s", "speech_3s", "silence_2s", "tone_noise_5s",
                                  "speech_30s"])
def test_parity_tiny_clips(clip):
    _run("tiny", clip, "default")


@pytest.mark.parametrize("prompt_name", ["english_no_itn", "hotwords_zh"])
def test_parity_tiny_prompts(prompt_name):
    _run("tiny", "speech_3s", prompt_name)


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["speech_3s"])
def test_parity_real_config(clip):
    """The released model's exact shapes (800M parameters), seeded random weights."""
    _run("real", clip, "default")
