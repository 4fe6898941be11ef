"""Two fused CUDA kernels for one-token decoding with MLX's CUDA backend.

A decode step on a GPU is bound by the number of kernels, not by bytes: on an H100 every small
kernel costs ~5-6 us (tools/gpu/probe_decode.py: 2000 chained element-wise ops, 5 us each), and a
Qwen3 layer runs 19 of them for one token (3.4-3.9 ms per token for 28 layers, of which the 197
matrix-vector products take 1.7 ms). These kernels remove 5 of the 19 per layer:

``qk_norm_rope``  q_norm + k_norm (RMSNorm per head) and RoPE for q and k (rotate-half), one
                  thread block per head: 4 kernels -> 1.
``add_rms_norm``  the residual add and the RMSNorm that follows it (post-attention norm, and
                  the next layer's input norm): 2 kernels -> 1, twice per layer.

Each rounds where the separate ops round (the residual sum and the normed q/k are stored in the
model dtype before the next step reads them), so float32 results agree with the separate kernels
to float32 rounding (tools/gpu/check_cuda_kernels.py compares logits and greedy tokens).

Used by `qwen3.Qwen3ForCausalLM.hidden` for one-row steps when MLX's default device is a CUDA
GPU; ``FUNASR_NANO_CUDA_KERNELS=0`` (or `qwen3.CUDA_KERNELS = False`) turns them off.
"""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np

_THREADS = 256
_HEAD_THREADS = 128
_cache: dict = {}

_REDUCE = """
template <int NT>
__device__ __forceinline__ float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float r = threadIdx.x < NT / 32 ? red[threadIdx.x] : 0.f;
    for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffff, r, o);
    if (threadIdx.x == 0) red[0] = r;
  }
  __syncthreads();
  return red[0];
}
"""


def enabled() -> bool:
    """Whether the kernels can and may be used in this process."""
    from . import qwen3

    choice = qwen3.CUDA_KERNELS
    if choice is False or os.environ.get("FUNASR_NANO_CUDA_KERNELS", "1") == "0":
        return False
    if not hasattr(mx.fast, "cuda_kernel"):
        return False
    try:
        return mx.default_device() == mx.gpu and bool(mx.cuda.is_available())
    except AttributeError:
        return False


def _add_rms_norm_kernel(d: int, eps: float):
    key = ("add_rms_norm", d, eps)
    if key not in _cache:
        per = d // _THREADS
        src = f"""
  const int row = blockIdx.x;
  const int t = threadIdx.x;
  const size_t base = (size_t)row * {d};
  __shared__ float red[{_THREADS // 32}];
  float v[{per}];
  float ss = 0.f;
  #pragma unroll
  for (int j = 0; j < {per}; j++) {{
    const int i = t + j * {_THREADS};
    const T s = static_cast<T>(static_cast<float>(x[base + i]) + static_cast<float>(h[base + i]));
    sum_out[base + i] = s;
    v[j] = static_cast<float>(s);
    ss += v[j] * v[j];
  }}
  const float inv = rsqrtf(block_sum<{_THREADS}>(ss, red) / {d}.0f + {eps!r}f);
  #pragma unroll
  for (int j = 0; j < {per}; j++) {{
    const int i = t + j * {_THREADS};
    norm_out[base + i] = static_cast<T>(static_cast<float>(w[i]) * static_cast<float>(static_cast<T>(v[j] * inv)));
  }}
"""
        _cache[key] = mx.fast.cuda_kernel(
            name=f"funasr_add_rms_norm_{d}_{abs(hash(eps)) % 10**8}", input_names=["x", "h", "w"],
            output_names=["sum_out", "norm_out"], source=src, header=_REDUCE)
    return _cache[key]


def add_rms_norm(x: mx.array, h: mx.array, w: mx.array, eps: float) -> tuple[mx.array, mx.array]:
    """(x + h, rms_norm(x + h) * w) over the last axis, in x's dtype."""
    d = x.shape[-1]
    rows = x.size // d
    k = _add_rms_norm_kernel(d, float(eps))
    s, y = k(inputs=[x, h.astype(x.dtype), w.astype(x.dtype)], template=[("T", x.dtype)],
             grid=(rows * _THREADS, 1, 1), threadgroup=(_THREADS, 1, 1),
             output_shapes=[x.shape, x.shape], output_dtypes=[x.dtype, x.dtype])
    return s, y


def _qk_kernel(hq: int, hk: int, hd: int, eps: float):
    key = ("qk_norm_rope", hq, hk, hd, eps)
    if key not in _cache:
        half = hd // 2
        src = f"""
  const int blk = blockIdx.x;
  const int t = threadIdx.x;
  const int b = blk / {hq + hk};
  const int hh = blk % {hq + hk};
  const bool is_q = hh < {hq};
  const T* src = is_q ? q + ((size_t)b * {hq} + hh) * {hd} : k + ((size_t)b * {hk} + (hh - {hq})) * {hd};
  const T* w = is_q ? wq : wk;
  T* dst = is_q ? q_out + ((size_t)b * {hq} + hh) * {hd} : k_out + ((size_t)b * {hk} + (hh - {hq})) * {hd};
  __shared__ float red[{hd // 32}];
  __shared__ float nrm[{hd}];
  const float xv = static_cast<float>(src[t]);
  const float inv = rsqrtf(block_sum<{hd}>(xv * xv, red) / {hd}.0f + {eps!r}f);
  nrm[t] = static_cast<float>(static_cast<T>(static_cast<float>(w[t]) * static_cast<float>(static_cast<T>(xv * inv))));
  __syncthreads();
  const int j = t & {half - 1};
  const float theta = static_cast<float>(pos[b]) * inv_freq[j];
  float sn, cs;
  sincosf(theta, &sn, &cs);
  const float o = t < {half} ? nrm[t] * cs - nrm[t + {half}] * sn : nrm[t] * cs + nrm[t - {half}] * sn;
  dst[t] = static_cast<T>(o);
"""
        _cache[key] = mx.fast.cuda_kernel(
            name=f"funasr_qk_norm_rope_{hq}_{hk}_{hd}_{abs(hash(eps)) % 10**8}",
            input_names=["q", "k", "wq", "wk", "pos", "inv_freq"], output_names=["q_out", "k_out"],
            source=src, header=_REDUCE)
    return _cache[key]


def inv_freq(head_dim: int, base: float) -> mx.array:
    key = ("inv_freq", head_dim, base)
    if key not in _cache:
        j = np.arange(head_dim // 2, dtype=np.float64)
        _cache[key] = mx.array((base ** (-2.0 * j / head_dim)).astype(np.float32))
    return _cache[key]


def qk_norm_rope(q: mx.array, k: mx.array, wq: mx.array, wk: mx.array, positions: mx.array,
                 freqs: mx.array, n_q: int, n_k: int, eps: float) -> tuple[mx.array, mx.array]:
    """One-row q [B, 1, n_q*d] and k [B, 1, n_k*d] -> normed, rotated q [B, n_q, 1, d] and
    k [B, n_k, 1, d]; `positions` [B] int32 is each row's position."""
    b = q.shape[0]
    hd = q.shape[-1] // n_q
    kern = _qk_kernel(n_q, n_k, hd, float(eps))
    qo, ko = kern(inputs=[q, k.astype(q.dtype), wq.astype(q.dtype), wk.astype(q.dtype), positions, freqs],
                  template=[("T", q.dtype)], grid=(b * (n_q + n_k) * hd, 1, 1), threadgroup=(hd, 1, 1),
                  output_shapes=[(b, n_q, 1, hd), (b, n_k, 1, hd)], output_dtypes=[q.dtype, q.dtype])
    return qo, ko


def supported(cfg, dtype) -> bool:
    """Shapes the kernels are written for: hidden size a multiple of 256, head_dim 64 or 128."""
    return (cfg.hidden_size % _THREADS == 0 and cfg.head_dim in (64, 128)
            and dtype in (mx.float32, mx.bfloat16, mx.float16))


__all__ = ["enabled", "add_rms_norm", "qk_norm_rope", "inv_freq", "supported"]
