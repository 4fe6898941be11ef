"""The Transformers (-hf) form, proven against two independent implementations.

A synthetic -hf directory is written from the reference harness's seeded weights (our key and
config mapping, saved by Transformers' own `FunAsrNanoForConditionalGeneration.save_pretrained`).
Then, on the reference's LFR features of one clip, at float32:

1. Transformers' implementation itself (`FunAsrNanoForConditionalGeneration`, eager attention)
   loaded from that directory must reproduce funasr's encoder, adaptor and teacher-forced logits:
   this proves the official -> -hf mapping (a wrong split of the fused SAN-M q/k/v, a shifted
   layer or a misplaced norm would give O(1) errors);
2. this project loaded from the same directory must reproduce both funasr and Transformers:
   this proves the -hf -> official mapping of `funasr_nano.checkpoint.hf`.

Error measure: relative Frobenius error, maximum over the 32 teacher-forced positions for logits.
Tolerance HF_TOL = 1e-5 (measured values are printed; see the README / the closing note).
The real configuration (800M parameters) runs in CI like tests/test_parity.py's real test.
"""

from __future__ import annotations

import gc

import mlx.core as mx
import numpy as np
import pytest

import funasr_nano
from funasr_nano.checkpoint.hf import write_hf_checkpoint

from tests.support.optional import need
from tests.support.reference_harness import reference_checkpoint, reference_npz

torch = need("torch")
transformers = need("transformers")
need("funasr")  # the reference harness
FunAsrNano = getattr(transformers, "FunAsrNanoForConditionalGeneration", None)

HF_TOL = 1e-5
N_STEPS = 32  # the same record as tests/test_parity.py (cached once for both)
CLIP = "speech_3s"


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    n = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (n if n > 0 else 1.0))


def release_memory():
    """Give freed memory back to the OS after a real-config run: MLX keeps freed buffers for reuse
    and glibc keeps freed heap (measured: 3.4 GB retained after the two real-config form tests, 0.5
    GB after this), which the suite's later real-config tests then lack on a 24 GB machine."""
    gc.collect()
    mx.clear_cache()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def max_row_err(a, b) -> float:
    return max(rel_err(a[i], b[i]) for i in range(len(b)))


_HF_DIRS = {}


def hf_dir_for(preset: str, tmp_path_factory):
    if preset not in _HF_DIRS:
        _HF_DIRS[preset] = write_hf_checkpoint(reference_checkpoint(preset, 0),
                                               tmp_path_factory.mktemp(f"hf_{preset}") / "Fun-ASR-Nano-hf")
    return _HF_DIRS[preset]


def transformers_chain(model, rec):
    """Transformers' encoder + adaptor on the reference LFR features, the official prompt (its
    first ceil(T/8) audio frames spliced in at the reference's position) and teacher-forced logits."""
    lfr = torch.from_numpy(rec["lfr"])[None]
    mask = torch.ones(1, lfr.shape[1], dtype=torch.long)
    n_audio, beg = int(rec["fake_token_len"]), int(rec["fbank_beg"])
    with torch.no_grad():
        feats = model.get_audio_features(lfr, mask)
        enc, ad = feats.last_hidden_state[0], feats.pooler_output
        emb = model.get_input_embeddings()(torch.from_numpy(rec["prompt_ids"])).clone()
        emb[beg:beg + n_audio] = ad[:n_audio]
        toks = torch.from_numpy(rec["greedy_tokens"][:-1])
        x = torch.cat([emb, model.get_input_embeddings()(toks)])[None]
        logits = model(inputs_embeds=x).logits[0, emb.shape[0] - 1:]
    return {"encoder": enc.numpy(), "adaptor": ad.numpy(), "inputs_embeds": emb.numpy(),
            "logits": logits.float().numpy()}


def our_chain(asr, rec):
    """This project's chain from the same LFR features (its own prompt and splice)."""
    from funasr_nano.bench.fidelity import teacher_forced_logits

    enc = asr.encode(rec["lfr"])
    ad = asr.adapt(enc, truncate=False)
    n_audio = int(rec["fake_token_len"])
    prompt = asr.prompt(n_audio)
    assert prompt.ids == rec["prompt_ids"].tolist()
    emb = asr.embed_prompt(prompt, ad[:, :n_audio])
    logits = teacher_forced_logits(asr, emb, rec["greedy_tokens"].tolist())
    return {"encoder": np.array(enc[0]), "adaptor": np.array(ad[0]), "inputs_embeds": np.array(emb[0]),
            "logits": np.array(logits)}


def _check(preset, tmp_path_factory):
    if FunAsrNano is None:
        pytest.fail(f"transformers {transformers.__version__} has no FunAsrNanoForConditionalGeneration; "
                    "the test extras require transformers>=5.17")
    rec = reference_npz(preset, 0, CLIP, n_steps=N_STEPS)
    ref = {"encoder": rec["encoder_out"], "adaptor": rec["adaptor_out"], "inputs_embeds": rec["inputs_embeds"],
           "logits": rec["step_logits"]}
    d = hf_dir_for(preset, tmp_path_factory)
    n_tensors = len(mx.load(str(d / "model.safetensors"))) if (d / "model.safetensors").is_file() else None

    model = FunAsrNano.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager").eval()
    hf = transformers_chain(model, rec)
    del model
    release_memory()
    asr = funasr_nano.load(d)
    assert asr.checkpoint_form == "transformers"
    ours = our_chain(asr, rec)
    del asr
    release_memory()

    errs = {}
    for stage in ("encoder", "adaptor", "inputs_embeds", "logits"):
        f = max_row_err if stage == "logits" else rel_err
        errs[f"transformers_vs_funasr.{stage}"] = f(hf[stage], ref[stage])
        errs[f"ours_vs_funasr.{stage}"] = f(ours[stage], ref[stage])
        errs[f"ours_vs_transformers.{stage}"] = f(ours[stage], hf[stage])
    print(f"\n[{preset}/{CLIP}] -hf tensors={n_tensors} " + " ".join(f"{k}={v:.2e}" for k, v in errs.items()))
    for k, v in errs.items():
        assert v < HF_TOL, f"{preset} {k}: rel err {v:.3g} >= {HF_TOL}"
    # and the same greedy tokens as funasr from every implementation
    assert hf["logits"].argmax(-1).tolist() == rec["greedy_tokens"].tolist()
    assert ours["logits"].argmax(-1).tolist() == rec["greedy_tokens"].tolist()
    return n_tensors


def test_hf_form_tiny(tmp_path_factory):
    _check("tiny", tmp_path_factory)


@pytest.mark.slow
def test_hf_form_real_config(tmp_path_factory):
    """The released model's shapes: 1540 tensors in the -hf file, as published."""
    n = _check("real", tmp_path_factory)
    assert n == 1540
