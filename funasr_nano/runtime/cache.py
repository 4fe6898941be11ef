"""Key/value caches of the decoder: `KVCache` grows in steps (the prefill and the growing-cache
decode loop, mlx-lm's idiom), `StaticKV` holds fixed-size buffers for the compiled one-token step
(`compiled_step`), filled from a prefill's `KVCache`s."""

from __future__ import annotations

import mlx.core as mx

BUCKET = 256  # StaticKV lengths are rounded up to this, so few shapes get compiled


class KVCache:
    """Per-layer key/value buffers grown in steps so decoding does not reallocate per token."""

    step = 256

    def __init__(self):
        self.keys = None
        self.values = None
        self.offset = 0

    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        n = k.shape[2]
        if self.keys is None or self.offset + n > self.keys.shape[2]:
            b, h, _, d = k.shape
            grow = ((n + self.step - 1) // self.step) * self.step
            new_k = mx.zeros((b, h, grow, d), k.dtype)
            new_v = mx.zeros((b, h, grow, v.shape[-1]), v.dtype)
            if self.keys is None:
                self.keys, self.values = new_k, new_v
            else:
                self.keys = mx.concatenate([self.keys[..., : self.offset, :], new_k], axis=2)
                self.values = mx.concatenate([self.values[..., : self.offset, :], new_v], axis=2)
        self.keys[..., self.offset : self.offset + n, :] = k
        self.values[..., self.offset : self.offset + n, :] = v
        self.offset += n
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]

    @property
    def state(self):
        return self.keys, self.values



def make_cache(cfg) -> list[KVCache]:
    """One `KVCache` per decoder layer of a `Qwen3Config`."""
    return [KVCache() for _ in range(cfg.num_hidden_layers)]


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
