"""SenseVoiceEncoderSmall: sinusoidal input encoding + SAN-M layers with an FSMN memory.

Module and parameter names mirror the checkpoint keys under `audio_encoder.` so weights load
without renaming.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .config import EncoderConfig


def layer_norm_fp32(x: mx.array, ln: nn.LayerNorm, shifted: bool = False) -> mx.array:
    """LayerNorm computed in float32 whatever the module dtype, as the reference does.

    `shifted` first subtracts each row's first element: for inputs sitting on a large common
    offset (the log-mel floor of silence times sqrt(512) is about -360) a plain float32 mean
    loses ~1e-4 relative accuracy; the shift keeps it at ~1e-7.
    """
    x32 = x.astype(mx.float32)
    w, b = ln.weight.astype(mx.float32), ln.bias.astype(mx.float32)
    if not shifted:
        return mx.fast.layer_norm(x32, w, b, ln.eps).astype(x.dtype)
    c = x32 - x32[..., :1]
    c = c - c.mean(axis=-1, keepdims=True)
    y = c * mx.rsqrt((c * c).mean(axis=-1, keepdims=True) + ln.eps)
    return (y * w + b).astype(x.dtype)


def sinusoidal_encoding(length: int, depth: int) -> np.ndarray:
    """The reference's SinusoidalPositionEncoder table, positions 1..length, float32.

    Computed in float32 with the same operation order as the reference so the table matches
    bit for bit up to libm differences.
    """
    one = np.float32
    increment = np.log(np.array([10000.0], np.float32)) / one(depth / 2 - 1)
    inv_timescales = np.exp(np.arange(depth // 2, dtype=np.float32) * (-increment))
    scaled = np.arange(1, length + 1, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


class FSMNBlock(nn.Module):
    """Depthwise Conv1d without bias; weight kept in the checkpoint's [C, 1, K] layout."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.weight = mx.zeros((channels, 1, kernel_size))


class SANMAttention(nn.Module):
    def __init__(self, in_dim: int, dim: int, heads: int, kernel_size: int, sanm_shift: int = 0):
        super().__init__()
        self.heads = heads
        self.d_k = dim // heads
        self.linear_q_k_v = nn.Linear(in_dim, 3 * dim)
        self.linear_out = nn.Linear(dim, dim)
        self.fsmn_block = FSMNBlock(dim, kernel_size)
        # The FSMN's form: K shifted multiply-adds (False: fastest on the CPU) or one grouped conv1d
        # (True: one kernel instead of ~2K, which a GPU launches faster). The runtime's backend
        # policy (``fsmn_conv``) sets it; both compute the same correlation.
        self.fsmn_conv = False
        left = (kernel_size - 1) // 2
        if sanm_shift > 0:
            left += sanm_shift
        self.pad = (left, kernel_size - 1 - left)

    def fsmn(self, v: mx.array, mask: mx.array | None) -> mx.array:
        if mask is not None:
            v = v * mask
        t = v.shape[1]
        k = self.fsmn_block.weight.shape[-1]
        w = self.fsmn_block.weight[:, 0, :].astype(v.dtype)  # [C, K]
        vp = mx.pad(v, [(0, 0), self.pad, (0, 0)])
        if self.fsmn_conv:  # depthwise: weight [C, K, 1], one group per channel
            out = v + mx.conv1d(vp, w[:, :, None], groups=w.shape[0])
        else:
            out = v
            for j in range(k):
                out = out + vp[:, j : j + t, :] * w[:, j]
        if mask is not None:
            out = out * mask
        return out

    def __call__(self, x: mx.array, mask: mx.array | None, attn_mask: mx.array | None) -> mx.array:
        b, t, _ = x.shape
        q, k, v = mx.split(self.linear_q_k_v(x), 3, axis=-1)
        memory = self.fsmn(v, mask)

        def heads(a):
            return a.reshape(b, t, self.heads, self.d_k).transpose(0, 2, 1, 3)

        o = mx.fast.scaled_dot_product_attention(
            heads(q), heads(k), heads(v), scale=self.d_k ** -0.5, mask=attn_mask
        )
        o = o.transpose(0, 2, 1, 3).reshape(b, t, -1)
        return self.linear_out(o) + memory


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def __call__(self, x):
        return self.w_2(nn.relu(self.w_1(x)))


class SANMLayer(nn.Module):
    def __init__(self, in_dim: int, cfg: EncoderConfig):
        super().__init__()
        d = cfg.output_size
        self.in_dim = in_dim
        self.norm1 = nn.LayerNorm(in_dim, eps=1e-5)
        self.self_attn = SANMAttention(in_dim, d, cfg.attention_heads, cfg.kernel_size, cfg.sanm_shift)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.feed_forward = FeedForward(d, cfg.linear_units)

    def __call__(self, x, mask, attn_mask):
        # The first layer sees raw scaled features (large offset): normalise it the careful way.
        h = self.self_attn(layer_norm_fp32(x, self.norm1, shifted=self.in_dim != h_dim(self)), mask, attn_mask)
        # The first layer changes width (560 -> 512), so it has no attention residual.
        x = x + h if self.in_dim == h.shape[-1] else h
        return x + self.feed_forward(layer_norm_fp32(x, self.norm2))


def h_dim(layer: "SANMLayer") -> int:
    return layer.norm2.weight.shape[0]


def padding_masks(lengths: mx.array | None, t: int, dtype) -> tuple:
    """(time mask [B, T, 1] in dtype, key mask [B, 1, 1, T] bool) or (None, None) when unpadded."""
    if lengths is None:
        return None, None
    valid = mx.arange(t)[None, :] < lengths[:, None]
    return valid[:, :, None].astype(dtype), valid[:, None, None, :]


class SenseVoiceEncoderSmall(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.encoders0 = [SANMLayer(cfg.input_size, cfg)]
        self.encoders = [SANMLayer(cfg.output_size, cfg) for _ in range(cfg.num_blocks - 1)]
        self.after_norm = nn.LayerNorm(cfg.output_size, eps=1e-5)
        self.tp_encoders = [SANMLayer(cfg.output_size, cfg) for _ in range(cfg.tp_blocks)]
        self.tp_norm = nn.LayerNorm(cfg.output_size, eps=1e-5)

    def layers(self) -> list:
        """Every SAN-M layer in order: the width-changing first one, the main stack, the tp stack."""
        return self.encoders0 + self.encoders + self.tp_encoders

    def __call__(self, feats: mx.array, lengths: mx.array | None = None, eval_every: int = 0) -> mx.array:
        """feats [B, T, input_size] -> [B, T, output_size]; `lengths` masks padded frames.

        `eval_every` > 0 evaluates a batch's activations after every that many layers: the
        70-layer graph is otherwise evaluated at once, and a GPU backend keeps each operation's
        temporaries until the work submitted with it completes, so a large batch's peak grows with
        the depth (H200, bf16, 32 x 30 s: 10.7 GB). One clip's are small and each evaluation is a
        device round trip, so a single clip is never split. Numerics are the same either way."""
        b, t, d = feats.shape
        if d != self.cfg.input_size:
            raise ValueError(f"encoder expects {self.cfg.input_size}-d features, got {d}")
        dtype = self.after_norm.weight.dtype
        pe = mx.array(sinusoidal_encoding(t, d))
        x = (feats.astype(mx.float32) * math.sqrt(self.cfg.output_size) + pe).astype(dtype)
        mask, attn_mask = padding_masks(lengths, t, dtype)
        for i, layer in enumerate(self.layers()):
            if i == len(self.encoders) + 1:
                x = layer_norm_fp32(x, self.after_norm)
            x = layer(x, mask, attn_mask)
            if eval_every and b > 1 and (i + 1) % eval_every == 0:
                mx.eval(x)
        return layer_norm_fp32(x, self.tp_norm)
