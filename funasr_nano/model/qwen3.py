"""Qwen3 decoder (the `llm.` part of the checkpoint).

Pre-norm layers with RMSNorm, q/k RMSNorm per head before rotary embeddings (rotate-half
form), grouped-query attention, SwiGLU MLP, tied or separate output head. Names mirror
`llm.model.*` / `llm.lm_head.*`.
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx
import mlx.nn as nn

from .config import Qwen3Config


class Attention(nn.Module):
    def __init__(self, cfg: Qwen3Config):
        super().__init__()
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.rope_theta = cfg.rope_theta
        d = cfg.hidden_size
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=cfg.rms_norm_eps)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=cfg.rms_norm_eps)

    def project(self, x):
        """q, k, v rows of x [B, N, D], before the per-head norms."""
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def heads(self, q, k, v, positions):
        """[B, N, H*d] projections -> normed, rotated [B, H, N, d] q, k and [B, H, N, d] v."""
        b, n, _ = q.shape
        q = self.q_norm(_split_heads(q, b, n, self.n_heads))
        k = self.k_norm(_split_heads(k, b, n, self.n_kv))
        v = _split_heads(v, b, n, self.n_kv)
        q = mx.fast.rope(q, self.head_dim, traditional=False, base=self.rope_theta, scale=1.0, offset=positions)
        k = mx.fast.rope(k, self.head_dim, traditional=False, base=self.rope_theta, scale=1.0, offset=positions)
        return q, k, v

    def __call__(self, x, cache, positions, mask):
        b, n, _ = x.shape
        q, k, v = self.heads(*self.project(x), positions)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.head_dim ** -0.5, mask=mask)
        return self.o_proj(_merge_heads(o, b, n))


def _split_heads(a, b, n, h):
    # One row per sequence (decoding): [B, 1, H*d] -> [B, H, 1, d] is a plain reshape, which
    # keeps the array contiguous (a transpose would leave strides for later kernels to copy).
    if n == 1:
        return a.reshape(b, h, 1, -1)
    return a.reshape(b, n, h, -1).transpose(0, 2, 1, 3)


def _merge_heads(o, b, n):
    if n == 1:
        return o.reshape(b, 1, -1)
    return o.transpose(0, 2, 1, 3).reshape(b, n, -1)


@partial(mx.compile, shapeless=True)
def swiglu(gate, up):
    """silu(gate) * up as one kernel."""
    return gate * mx.sigmoid(gate) * up


class MLP(nn.Module):
    def __init__(self, cfg: Qwen3Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def __call__(self, x):
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen3Config):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def __call__(self, x, cache, positions, mask):
        x = x + self.self_attn(self.input_layernorm(x), cache, positions, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3Model(nn.Module):
    def __init__(self, cfg: Qwen3Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = [DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)]
        self.norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)


class Qwen3ForCausalLM(nn.Module):
    def __init__(self, cfg: Qwen3Config):
        super().__init__()
        self.cfg = cfg
        self.model = Qwen3Model(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def embed(self, ids: mx.array) -> mx.array:
        return self.model.embed_tokens(ids)

    def hidden(self, embeds: mx.array, cache: list | None, positions=0, mask=None) -> mx.array:
        """Run the decoder layers on input embeddings [B, N, D]; returns normed hidden states.

        `positions` is the RoPE position of the first row (int, or [B] int array for
        left-padded batches); `mask` is None, "causal" or a boolean [B, 1, N, S] array.
        """
        x = embeds
        for i, layer in enumerate(self.model.layers):
            x = layer(x, None if cache is None else cache[i], positions, mask)
        return self.model.norm(x)

    def logits(self, h: mx.array) -> mx.array:
        if self.cfg.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(h)
        return self.lm_head(h)
