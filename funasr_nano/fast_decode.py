"""A compiled one-token decoder step over fixed-size key/value buffers.

Building the graph of 28 decoder layers in Python costs milliseconds per token, about as much
as running it on a GPU. With buffers of a fixed size (the write position and the valid-key mask
are array inputs, not Python integers) every step has the same shapes, so `mx.compile` traces
the step once per (batch, buffer length) and replays it afterwards.

Numerically the step equals the cached path in `qwen3.py`: the unused tail of the buffers is
masked out of the attention.
"""

from __future__ import annotations

import mlx.core as mx

from .precision import no_dense_path

BUCKET = 256  # buffer lengths are rounded up to this, so few shapes get compiled


class StaticKV:
    """Fixed-shape per-layer key/value buffers filled from a prefill's `KVCache`s."""

    def __init__(self, cache, max_len: int):
        n = cache[0].offset
        length = ((max_len + BUCKET - 1) // BUCKET) * BUCKET
        self.keys, self.values = [], []
        for c in cache:
            k, v = c.state
            b, h, _, d = k.shape
            kb = mx.zeros((b, h, length, d), k.dtype)
            vb = mx.zeros((b, h, length, v.shape[-1]), v.dtype)
            kb[..., :n, :] = k[..., :n, :]
            vb[..., :n, :] = v[..., :n, :]
            self.keys.append(kb)
            self.values.append(vb)
        self.length = length


def _layer_step(layer, x, k_buf, v_buf, positions, write_idx, mask):
    attn = layer.self_attn
    b = x.shape[0]
    h = layer.input_layernorm(x)
    q, k, v = attn.heads(*attn.project(h), positions)
    k_buf = mx.slice_update(k_buf, k.astype(k_buf.dtype), write_idx, axes=(2,))
    v_buf = mx.slice_update(v_buf, v.astype(v_buf.dtype), write_idx, axes=(2,))
    o = mx.fast.scaled_dot_product_attention(q, k_buf, v_buf, scale=attn.head_dim ** -0.5, mask=mask)
    x = x + attn.o_proj(o.reshape(b, 1, -1))
    x = x + layer.mlp(layer.post_attention_layernorm(x))
    return x, k_buf, v_buf


def make_step(llm, return_logits: bool = False):
    """Return compiled `step(token[B], write_idx[1], base_pos[B], kv_valid[B, L], keys, values)
    -> (next_token[B] or logits[B, V], keys, values)` for this decoder."""

    def step(token, write_idx, base_pos, kv_valid, keys, values):
        with no_dense_path():
            return _step(token, write_idx, base_pos, kv_valid, keys, values)

    def _step(token, write_idx, base_pos, kv_valid, keys, values):
        length = kv_valid.shape[1]
        mask = (kv_valid & (mx.arange(length)[None, :] <= write_idx))[:, None, None, :]
        positions = base_pos + write_idx
        x = llm.embed(token[:, None])
        new_k, new_v = [], []
        for i, layer in enumerate(llm.model.layers):
            x, kb, vb = _layer_step(layer, x, keys[i], values[i], positions, write_idx, mask)
            new_k.append(kb)
            new_v.append(vb)
        logits = llm.logits(llm.model.norm(x)[:, -1])
        return (logits if return_logits else mx.argmax(logits, axis=-1)), new_k, new_v

    return mx.compile(step)
