"""Kaldi-compatible log-mel filterbank and low-frame-rate (LFR) stacking, in numpy.

Matches the reference `WavFrontend` (kaldi fbank via torchaudio or kaldi-native-fbank,
then `apply_lfr`) with dither 0. All frames of a clip are processed at once with strided
views; the heavy part is one batched real FFT.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .config import FrontendConfig

_FLT_EPSILON = np.float32(1.1920928955078125e-07)
_PREEMPHASIS = 0.97
_LOW_FREQ = 20.0


def _window_size(fs: int, frame_length_ms: float) -> int:
    # kaldi-native-fbank computes this in single precision; mirror it so that the
    # short-clip case (frame length shrunk to the clip) lands on the same integer.
    return int(np.float32(fs) * np.float32(0.001) * np.float32(frame_length_ms))


@lru_cache(maxsize=16)
def _hamming(n: int) -> np.ndarray:
    if n == 1:
        return np.ones(1)
    a = 2.0 * math.pi / (n - 1)
    return 0.54 - 0.46 * np.cos(a * np.arange(n))


@lru_cache(maxsize=16)
def mel_filterbank(n_mels: int, n_fft: int, fs: int) -> np.ndarray:
    """Kaldi's triangular mel filters, [n_fft // 2 + 1, n_mels] (Nyquist row is zero)."""

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    high = fs / 2.0
    mel_low, mel_high = mel(_LOW_FREQ), mel(high)
    delta = (mel_high - mel_low) / (n_mels + 1)
    n_bins = n_fft // 2
    bin_mel = mel(np.arange(n_bins) * (fs / n_fft))[:, None]
    left = mel_low + np.arange(n_mels) * delta
    center, right = left + delta, left + 2 * delta
    up = (bin_mel - left) / (center - left)
    down = (right - bin_mel) / (right - center)
    w = np.where((bin_mel > left) & (bin_mel < right), np.minimum(up, down), 0.0)
    out = np.zeros((n_bins + 1, n_mels))
    out[:n_bins] = w
    return out


def fbank(waveform: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """Log-mel filterbank of one mono clip in [-1, 1]: returns float32 [T, n_mels].

    Scaled by 32768 first (the reference's `upsacle_samples`), snip_edges framing,
    DC removal, pre-emphasis 0.97, symmetric Hamming, power spectrum, log floor FLT_EPSILON.
    """
    x = np.asarray(waveform)
    if x.ndim != 1:
        raise ValueError(f"fbank expects a 1-D mono waveform, got shape {x.shape}")
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, cfg.n_mels), np.float32)
    x = x.astype(np.float64) * 32768.0
    frame_ms = min(cfg.frame_length_ms, n / cfg.fs * 1000.0)
    win = _window_size(cfg.fs, frame_ms)
    shift = _window_size(cfg.fs, cfg.frame_shift_ms)
    if win < 1 or n < win:
        return np.zeros((0, cfg.n_mels), np.float32)
    n_frames = 1 + (n - win) // shift
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::shift][:n_frames]
    frames = frames - frames.mean(axis=1, keepdims=True)
    emph = np.empty_like(frames)
    emph[:, 1:] = frames[:, 1:] - _PREEMPHASIS * frames[:, :-1]
    emph[:, 0] = frames[:, 0] * (1.0 - _PREEMPHASIS)
    emph *= _hamming(win)
    n_fft = 1 << (win - 1).bit_length()
    if not mel_filterbank(cfg.n_mels, n_fft, cfg.fs).any(axis=0).all():
        # Under ~16 ms the FFT is too coarse for every mel filter to get a bin; kaldi (and so
        # the reference) refuses such input ("num_mel_bins too large"): give no frames.
        return np.zeros((0, cfg.n_mels), np.float32)
    power = np.abs(np.fft.rfft(emph, n=n_fft, axis=1)) ** 2
    energies = (power @ mel_filterbank(cfg.n_mels, n_fft, cfg.fs)).astype(np.float32)
    return np.log(np.maximum(energies, _FLT_EPSILON))


def apply_lfr(feats: np.ndarray, lfr_m: int, lfr_n: int) -> np.ndarray:
    """Stack lfr_m frames every lfr_n frames: [T, D] -> [ceil(T / lfr_n), lfr_m * D].

    The reference pads (lfr_m - 1) // 2 copies of the first frame on the left and repeats
    the last frame on the right as far as the final window needs.
    """
    t, d = feats.shape
    if t == 0:
        return np.zeros((0, lfr_m * d), feats.dtype)
    t_lfr = -(-t // lfr_n)
    left = (lfr_m - 1) // 2
    starts = np.arange(t_lfr)[:, None] * lfr_n + np.arange(lfr_m)[None, :] - left
    idx = np.clip(starts, 0, t - 1)
    return feats[idx].reshape(t_lfr, lfr_m * d)


def features(waveform: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """Frontend for one clip: waveform (16 kHz, [-1, 1]) -> LFR features [T_lfr, 560]."""
    return apply_lfr(fbank(waveform, cfg), cfg.lfr_m, cfg.lfr_n)


def batch_features(waveforms, cfg: FrontendConfig) -> tuple[np.ndarray, np.ndarray]:
    """Frontend for several clips: zero-padded [B, T_max, 560] and lengths [B] (int32)."""
    feats = [features(w, cfg) for w in waveforms]
    lengths = np.array([f.shape[0] for f in feats], dtype=np.int32)
    t_max = int(lengths.max()) if len(feats) else 0
    out = np.zeros((len(feats), t_max, cfg.feature_dim), np.float32)
    for i, f in enumerate(feats):
        out[i, : f.shape[0]] = f
    return out, lengths


def num_audio_tokens(t_lfr: int, use_low_frame_rate: bool = True) -> int:
    """How many adaptor frames the prompt takes: the reference's two stride-2 conv length
    formulas followed by a halving, which equals ceil(T_lfr / 8)."""
    if not use_low_frame_rate:
        return t_lfr
    o = 1 + (t_lfr - 3 + 2) // 2
    o = 1 + (o - 3 + 2) // 2
    return (o - 1) // 2 + 1


def batch_features_mx(waveforms, cfg: FrontendConfig):
    """The same frontend in MLX for a batch of clips (runs on the GPU when there is one).

    Returns (features [B, T_lfr_max, 560] float32 mx.array, zero-padded; lengths [B] numpy
    int32). Clips shorter than one standard frame fall back to the numpy path row by row.
    Float32 throughout: within ~1e-6 relative of the float64 numpy path.
    """
    import mlx.core as mx

    win = _window_size(cfg.fs, cfg.frame_length_ms)
    shift = _window_size(cfg.fs, cfg.frame_shift_ms)
    n = np.array([len(w) for w in waveforms])
    if len(waveforms) == 0:
        return mx.zeros((0, 0, cfg.feature_dim)), np.zeros(0, np.int32)
    if (n < win).any():
        feats, lengths = batch_features(waveforms, cfg)
        return mx.array(feats), lengths
    t = 1 + (n - win) // shift
    t_max = int(t.max())
    x = np.zeros((len(waveforms), int(n.max())), np.float32)
    for i, w in enumerate(waveforms):
        x[i, : len(w)] = w
    xm = mx.array(x) * 32768.0
    idx = mx.array(np.arange(t_max)[:, None] * shift + np.arange(win)[None, :])
    frames = xm[:, idx]  # [B, T, win]
    frames = frames - frames.mean(axis=-1, keepdims=True)
    prev = mx.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
    frames = (frames - _PREEMPHASIS * prev) * mx.array(_hamming(win).astype(np.float32))
    n_fft = 1 << (win - 1).bit_length()
    spec = mx.fft.rfft(frames, n=n_fft, axis=-1)
    power = mx.square(mx.real(spec)) + mx.square(mx.imag(spec))
    mel = power @ mx.array(mel_filterbank(cfg.n_mels, n_fft, cfg.fs).astype(np.float32))
    logmel = mx.log(mx.maximum(mel, float(_FLT_EPSILON)))  # [B, T, n_mels]

    m, step = cfg.lfr_m, cfg.lfr_n
    t_lfr = -(-t // step)
    tl_max = int(t_lfr.max())
    starts = np.arange(tl_max)[:, None] * step + np.arange(m)[None, :] - (m - 1) // 2
    rows = np.clip(starts[None], 0, (t - 1)[:, None, None])  # per-row replicate-last padding
    gathered = mx.take_along_axis(logmel, mx.array(rows.reshape(len(waveforms), -1, 1)), axis=1)
    feats = gathered.reshape(len(waveforms), tl_max, m * cfg.n_mels)
    keep = mx.array((np.arange(tl_max)[None, :] < t_lfr[:, None]).astype(np.float32))[..., None]
    return feats * keep, t_lfr.astype(np.int32)
