"""The compiled fixed-buffer decode step against the plain KV-cache path."""

import mlx.core as mx
import numpy as np
import pytest

import funasr_nano
from funasr_nano.runtime.cache import StaticKV
from funasr_nano.runtime.compiled_step import make_step
from funasr_nano.runtime.decode import left_pad
from funasr_nano.synthetic.signals import speech_like


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
    from funasr_nano.runtime.decode import greedy_decode

    default = asr.policy
    try:
        asr.policy = "compiled_decode_rows=0"
        slow = greedy_decode(asr, embeds, valid, offsets, 10, asr.stop_ids, ignore_eos=True)
        asr.policy = "compiled_decode_rows=8"
        fast = greedy_decode(asr, embeds, valid, offsets, 10, asr.stop_ids, ignore_eos=True)
    finally:
        asr.policy = default
    assert (slow.path, fast.path) == ("growing-cache", "compiled")
    assert fast.tokens == slow.tokens
    assert all(len(t) == 10 for t in fast.tokens)


def test_compiled_decode_with_quantized_batch(tiny_ckpt):
    """The compiled step with quantized layers on quantized_matmul (dense path off, as on Metal)
    decodes a 4-row q4 batch like the growing cache; where the dense path would apply (CPU, 4 rows:
    it evaluates block by block and cannot be traced) the policy falls back to the growing cache
    even when the compiled step is asked for."""
    from funasr_nano.runtime.decode import greedy_decode, left_pad

    q4 = funasr_nano.load(tiny_ckpt, preset="q4-g32", policy="compiled_decode_rows=8,dequant_min_rows=never")
    wavs = [speech_like(s, 1) for s in (1.0, 1.5, 2.0, 2.5)]
    rows = [q4.embed_prompt(q4.prompt(a.shape[1]), a)[0] for a in (q4.adapt(q4.encode(q4.features(w))) for w in wavs)]
    embeds, valid, offsets = left_pad(rows)
    fast = greedy_decode(q4, embeds, valid, offsets, 6, q4.stop_ids, ignore_eos=True)
    q4.policy = "compiled_decode_rows=0"
    slow = greedy_decode(q4, embeds, valid, offsets, 6, q4.stop_ids, ignore_eos=True)
    q4.policy = "compiled_decode_rows=8"  # CPU default dequant_min_rows=4: 4 rows take the dense path
    forced = greedy_decode(q4, embeds, valid, offsets, 6, q4.stop_ids, ignore_eos=True)
    assert (fast.path, slow.path, forced.path) == ("compiled", "growing-cache", "growing-cache")
    assert fast.tokens == slow.tokens == forced.tokens and all(len(t) == 6 for t in fast.tokens)



def test_cpu_rope_and_attention_forms_equal_mlx_ops(asr):
    """The step's CPU forms (RoPE from shared cos/sin tables, grouped-query attention without
    broadcasting the key/value heads) against MLX's `fast.rope` / `fast.scaled_dot_product_attention`
    on a left-padded 3-row batch (per-row positions, masked pads): same logits."""
    rows = [_embeds(asr, s)[0] for s in (1.0, 2.5, 4.0)]
    embeds, valid, offsets = left_pad(rows)
    b, s, _ = embeds.shape
    from funasr_nano.runtime.decode import _prefill_mask

    assert asr.cfg.llm.num_attention_heads > asr.cfg.llm.num_key_value_heads  # grouped heads exercised
    outs = {}
    for cpu_ops in (False, True):
        cache = asr.new_cache()
        asr.net.llm.hidden(embeds, cache, positions=offsets, mask=_prefill_mask(valid)[:, None])
        kv = StaticKV(cache, s + 6)
        kv_valid = mx.ones((b, kv.length), dtype=mx.bool_)
        kv_valid[:, :s] = valid
        step = make_step(asr.net.llm, return_logits=True, cpu_ops=cpu_ops)
        keys, values, tok, got = kv.keys, kv.values, mx.array([5, 77, 901], dtype=mx.int32), []
        for i in range(6):
            logits, keys, values = step(tok, mx.array([s + i], dtype=mx.int32), offsets.astype(mx.int32),
                                        kv_valid, keys, values)
            got.append(np.array(logits))
            tok = mx.argmax(logits, axis=-1).astype(mx.int32)
        outs[cpu_ops] = got
    for a, c in zip(outs[False], outs[True]):
        assert np.abs(a - c).max() / np.abs(a).max() < 1e-6
