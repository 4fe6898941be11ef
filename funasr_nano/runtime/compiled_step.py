"""A compiled one-token decoder step over fixed-size key/value buffers.

Building the graph of 28 decoder layers in Python costs milliseconds per token, about as much
as running it on a GPU. With buffers of a fixed size (the write position and the valid-key mask
are array inputs, not Python integers) every step has the same shapes, so `mx.compile` traces
the step once per (batch, buffer length) and replays it afterwards.

Numerically the step equals the growing-cache path (`runtime.cache.KVCache`): the unused tail of
the buffers is masked out of the attention.
"""

from __future__ import annotations

import math

import mlx.core as mx

def rope_tables(positions: mx.array, head_dim: int, base: float):
    """cos, sin [B, 1, 1, d/2] of each row's position, for every layer of one step. Same float32
    arithmetic as MLX's RoPE on the CPU (frequencies exp(-j log(base) / (d/2))): bit-identical."""
    half = head_dim // 2
    freqs = mx.exp(mx.arange(half, dtype=mx.float32) * (-math.log(base) / half))
    theta = positions.astype(mx.float32)[:, None] * freqs[None, :]
    return mx.cos(theta)[:, None, None, :], mx.sin(theta)[:, None, None, :]


def _rope_one_row(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return mx.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _attend_one_row(q, k_buf, v_buf, mask, scale):
    """Attention of one query row per head over the whole buffer, grouped-query heads kept
    grouped: [B, Hq, 1, d] q against [B, Hkv, L, d] keys/values. On the CPU, MLX's attention
    broadcasts the shared key/value heads to every query head first, copying the buffers; this
    form multiplies each key/value head by its group of query rows instead. Same operations as
    MLX's own CPU attention otherwise (scaled q, boolean mask to the dtype's minimum, precise
    softmax)."""
    b, hq, _, d = q.shape
    hkv = k_buf.shape[1]
    s = (q.reshape(b, hkv, hq // hkv, d) * scale) @ k_buf.swapaxes(-1, -2)
    s = mx.where(mask, s, mx.finfo(s.dtype).min)
    p = mx.softmax(s, axis=-1, precise=True)
    return (p @ v_buf).reshape(b, hq, 1, d)


def _layer_step(layer, x, k_buf, v_buf, positions, write_idx, mask, tables=None):
    attn = layer.self_attn
    b = x.shape[0]
    h = layer.input_layernorm(x)
    if tables is None:
        q, k, v = attn.heads(*attn.project(h), positions)
    else:  # CPU: RoPE from the step's shared cos/sin tables
        q, k, v = attn.project(h)
        q = _rope_one_row(attn.q_norm(q.reshape(b, attn.n_heads, 1, -1)), *tables)
        k = _rope_one_row(attn.k_norm(k.reshape(b, attn.n_kv, 1, -1)), *tables)
        v = v.reshape(b, attn.n_kv, 1, -1)
    k_buf = mx.slice_update(k_buf, k.astype(k_buf.dtype), write_idx, axes=(2,))
    v_buf = mx.slice_update(v_buf, v.astype(v_buf.dtype), write_idx, axes=(2,))
    if tables is None:
        o = mx.fast.scaled_dot_product_attention(q, k_buf, v_buf, scale=attn.head_dim ** -0.5, mask=mask)
    else:
        o = _attend_one_row(q, k_buf, v_buf, mask, attn.head_dim ** -0.5)
    x = x + attn.o_proj(o.reshape(b, 1, -1))
    x = x + layer.mlp(layer.post_attention_layernorm(x))
    return x, k_buf, v_buf


def make_step(llm, return_logits: bool = False, cpu_ops: bool = False):
    """Return compiled `step(token[B], write_idx[1], base_pos[B], kv_valid[B, L], keys, values)
    -> (next_token[B] or logits[B, V], keys, values)` for this decoder. `cpu_ops` (the backend
    policy's ``step_ops == "tables"``) computes RoPE and attention with the forms above.

    Quantized layers must not take their dense path inside the trace (it evaluates blocks
    eagerly): `BackendPolicy.use_compiled` only picks this step for row counts below it."""

    def step(token, write_idx, base_pos, kv_valid, keys, values):
        length = kv_valid.shape[1]
        mask = (kv_valid & (mx.arange(length)[None, :] <= write_idx))[:, None, None, :]
        positions = base_pos + write_idx
        tables = rope_tables(positions, llm.cfg.head_dim, llm.cfg.rope_theta) if cpu_ops else None
        x = llm.embed(token[:, None])
        new_k, new_v = [], []
        for i, layer in enumerate(llm.model.layers):
            x, kb, vb = _layer_step(layer, x, keys[i], values[i], positions, write_idx, mask, tables)
            new_k.append(kb)
            new_v.append(vb)
        logits = llm.logits(llm.model.norm(x)[:, -1])
        return (logits if return_logits else mx.argmax(logits, axis=-1)), new_k, new_v

    return mx.compile(step)
