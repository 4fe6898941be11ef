"""The compiled fixed-buffer decode step against the plain KV-cache path."""

import mlx.core as mx
import numpy as np
import pytest

import funasr_nano
from funasr_nano.fast_decode import StaticKV, make_step
from funasr_nano.generate import left_pad
from funasr_nano.test_audio import speech_like


@pytest.fixture(scope="module")
def asr(tiny_ckpt):
    return funasr_nano.load(tiny_ckpt)


def _embeds(asr, seconds):
    wav = speech_like(seconds, 3)
    aud = asr.adapt(asr.encode(asr.features(wav)))
    return asr.embed_prompt(asr.prompt(aud.shape[1]), aud)


def test_compiled_step_logits_equal_cached_path(asr):
    emb = _embeds(asr, 2.0)
    s = emb.shape[1]
    rng = np.random.default_rng(0)
    feed = rng.integers(0, 151000, size=12).tolist()  # teacher-forced: any tokens will do

    cache = asr.new_cache()
    asr.prefill(emb, cache)
    ref = [asr.decode_step(mx.array([t]), cache) for t in feed]

    cache2 = asr.new_cache()
    asr.prefill(emb, cache2)
    kv = StaticKV(cache2, s + len(feed))
    step = make_step(asr.net.llm, return_logits=True)
    keys, values = kv.keys, kv.values
    valid = mx.ones((1, kv.length), dtype=mx.bool_)
    base = mx.zeros((1,), dtype=mx.int32)
    for i, t in enumerate(feed):
        logits, keys, values = step(mx.array([t], dtype=mx.int32), mx.array([s + i], dtype=mx.int32), base,
                                    valid, keys, values)
        a, b = np.array(logits), np.array(ref[i])
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-5, f"step {i}"


def test_compiled_batched_decode_equals_uncompiled(asr):
    rows = [_embeds(asr, s)[0] for s in (1.0, 2.5, 4.0)]
    embeds, valid, offsets = left_pad(rows)
    from funasr_nano.generate import greedy_decode

    asr.compiled_decode = False
    slow = greedy_decode(asr, embeds, valid, offsets, 10, asr.stop_ids, ignore_eos=True)
    asr.compiled_decode = True
    fast = greedy_decode(asr, embeds, valid, offsets, 10, asr.stop_ids, ignore_eos=True)
    assert fast.tokens == slow.tokens
    assert all(len(t) == 10 for t in fast.tokens)


def test_compiled_decode_with_quantized_batch(tiny_ckpt):
    """A 4-row batch would take the CPU dequantize path, which evaluates eagerly and cannot be
    traced; the compiled step must keep quantized layers on quantized_matmul instead."""
    q4 = funasr_nano.load(tiny_ckpt, preset="q4-g32")
    q4.compiled_decode = True  # the automatic choice would skip compiling for 4 CPU rows
    wavs = [speech_like(s, 1) for s in (1.0, 1.5, 2.0, 2.5)]
    fast = [r.tokens for r in q4.transcribe_batch(wavs, max_new_tokens=6, ignore_eos=True)]
    q4.compiled_decode = False
    slow = [r.tokens for r in q4.transcribe_batch(wavs, max_new_tokens=6, ignore_eos=True)]
    assert fast == slow and all(len(t) == 6 for t in fast)


# ----- fused projections (funasr_nano.fusion) ------------------------------------------------------


@pytest.mark.parametrize("preset", ["fp32", "q4"])
def test_fused_projections_match_separate(tiny_ckpt, preset):
    """q/k/v and gate/up joined into one matrix each: same logits (float32 rounding only) and the
    same greedy tokens as the separate products, on the growing-cache and compiled paths."""
    import mlx.core as mx

    import funasr_nano
    from funasr_nano.fusion import is_fused
    from funasr_nano.test_audio import speech_like

    sep = funasr_nano.load(tiny_ckpt, preset=preset, fuse=False)
    fus = funasr_nano.load(tiny_ckpt, preset=preset)
    assert not is_fused(sep.net.llm) and is_fused(fus.net.llm)
    attn = fus.net.llm.model.layers[0].self_attn
    assert "q_proj" not in attn and "qkv_proj" in attn and "gate_up_proj" in fus.net.llm.model.layers[0].mlp
    emb = mx.random.normal((1, 23, sep.cfg.llm.hidden_size), key=mx.random.key(1)) * 0.05
    a = sep.prefill(emb, sep.new_cache(), all_logits=True)
    b = fus.prefill(emb, fus.new_cache(), all_logits=True)
    err = float(mx.abs(a - b).max() / mx.abs(a).max())
    assert err < 1e-5, err
    wav = speech_like(1.5, seed=3)
    for compiled in (False, True):
        sep.compiled_decode = fus.compiled_decode = compiled
        ta = sep.transcribe(wav, max_new_tokens=12, ignore_eos=True).tokens
        tb = fus.transcribe(wav, max_new_tokens=12, ignore_eos=True).tokens
        assert ta == tb


def test_unfused_parameters_restore_checkpoint_layout(tiny_ckpt):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    import funasr_nano
    from funasr_nano.fusion import fuse_projections, unfused_parameters

    sep = funasr_nano.load(tiny_ckpt, fuse=False)
    before = dict(tree_flatten(sep.net.parameters()))
    assert fuse_projections(sep.net.llm) == sep.cfg.llm.num_hidden_layers
    assert fuse_projections(sep.net.llm) == 0  # idempotent
    after = unfused_parameters(dict(tree_flatten(sep.net.parameters())), sep.cfg.llm)
    assert set(after) == set(before)
    for k, v in before.items():
        assert after[k].shape == v.shape and bool(mx.array_equal(after[k], v)), k
