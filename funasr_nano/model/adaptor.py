"""Audio adaptor (`Transformer` in the reference): frame stacking, a 2-layer MLP into the
LLM width, then pre-LN Transformer encoder blocks. Names mirror `audio_adaptor.` keys."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .config import AdaptorConfig
from .encoder import FeedForward, layer_norm_fp32, padding_masks


class MultiHeadedAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.d_k = dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)

    def __call__(self, x, attn_mask):
        b, t, _ = x.shape

        def heads(a):
            return a.reshape(b, t, self.heads, self.d_k).transpose(0, 2, 1, 3)

        o = mx.fast.scaled_dot_product_attention(
            heads(self.linear_q(x)), heads(self.linear_k(x)), heads(self.linear_v(x)),
            scale=self.d_k ** -0.5, mask=attn_mask,
        )
        return self.linear_out(o.transpose(0, 2, 1, 3).reshape(b, t, -1))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = MultiHeadedAttention(dim, heads)
        self.feed_forward = FeedForward(dim, dim // 4)
        # funasr.models.transformer.layer_norm.LayerNorm uses eps 1e-12.
        self.norm1 = nn.LayerNorm(dim, eps=1e-12)
        self.norm2 = nn.LayerNorm(dim, eps=1e-12)

    def __call__(self, x, attn_mask):
        x = x + self.self_attn(layer_norm_fp32(x, self.norm1), attn_mask)
        return x + self.feed_forward(layer_norm_fp32(x, self.norm2))


class AudioAdaptor(nn.Module):
    def __init__(self, cfg: AdaptorConfig):
        super().__init__()
        self.cfg = cfg
        self.linear1 = nn.Linear(cfg.encoder_dim * cfg.downsample_rate, cfg.ffn_dim)
        self.linear2 = nn.Linear(cfg.ffn_dim, cfg.llm_dim)
        self.blocks = [EncoderLayer(cfg.llm_dim, cfg.attention_heads) for _ in range(cfg.n_layer)]

    def __call__(self, x: mx.array, lengths: mx.array | None = None) -> tuple[mx.array, mx.array | None]:
        """x [B, T, encoder_dim] -> ([B, ceil(T/k), llm_dim], output lengths or None)."""
        b, t, d = x.shape
        k = self.cfg.downsample_rate
        chunks = (t - 1) // k + 1
        if chunks * k != t:
            x = mx.pad(x, [(0, 0), (0, chunks * k - t), (0, 0)])
        x = x.reshape(b, chunks, d * k)
        x = self.linear2(nn.relu(self.linear1(x)))
        out_lengths = None if lengths is None else (lengths - 1) // k + 1
        _, attn_mask = padding_masks(out_lengths, chunks, x.dtype)
        for block in self.blocks:
            x = block(x, attn_mask)
        return x, out_lengths
