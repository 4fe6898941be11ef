"""Deterministic synthetic test signals (16 kHz mono float32 in [-1, 1]); numpy only.

Used by the parity tests (reference harness) and by the benchmarks, so the same named clip is
bit-identical everywhere. Nothing here is meant to be intelligible speech: ``speech_like``
only has speech-like *spectra* (voiced harmonic segments with a pitch contour, formant
shaping that moves between vowel targets, unvoiced noise bursts, short pauses), which is
what matters for exercising the fbank/encoder numerics with realistic dynamic range.

Every generator is a pure function of its arguments (seeded ``numpy.random.default_rng``),
computes in float64 and returns a contiguous float32 array.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

SAMPLE_RATE = 16000
# Highest absolute sample value any generator here produces; keeps clear of +-1.0 so an
# int16 round trip or the x32768 scaling of the frontend never saturates.
PEAK_LIMIT = 0.95

__all__ = [
    "SAMPLE_RATE",
    "PEAK_LIMIT",
    "silence",
    "tone",
    "noise",
    "speech_like",
    "standard_clips",
    "check_amplitude",
    "num_samples",
]


def num_samples(seconds: float, sr: int = SAMPLE_RATE) -> int:
    """Number of samples for a duration (rounded to the nearest sample)."""
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    return int(round(seconds * sr))


def check_amplitude(x: np.ndarray, limit: float = 1.0, name: str = "signal") -> np.ndarray:
    """Validate a test clip: 1-D float32, finite, and no sample at or beyond ``limit``.

    Returns ``x`` unchanged so it can be used inline. Raises ``ValueError`` on clipping
    (``max|x| >= limit``), non-finite values, wrong dtype or wrong rank.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected numpy array, got {type(x).__name__}")
    if x.ndim != 1:
        raise ValueError(f"{name}: expected 1-D mono audio, got shape {x.shape}")
    if x.dtype != np.float32:
        raise ValueError(f"{name}: expected float32, got {x.dtype}")
    if x.size and not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: contains NaN/Inf")
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak >= limit:
        raise ValueError(f"{name}: clipped (peak {peak:.6f} >= {limit})")
    return x


def _finish(x: np.ndarray, name: str) -> np.ndarray:
    y = np.ascontiguousarray(x, dtype=np.float32)
    return check_amplitude(y, limit=1.0, name=name)


def _fade(n: int, fade: int) -> np.ndarray:
    """Raised-cosine fade-in/out envelope of length n with ramps of ``fade`` samples."""
    env = np.ones(n, dtype=np.float64)
    f = min(fade, n // 2)
    if f > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(f) + 0.5) / f)
        env[:f] = ramp
        env[n - f:] = ramp[::-1]
    return env


def silence(seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Digital silence (all zeros). Exercises the log floor of the fbank."""
    return _finish(np.zeros(num_samples(seconds, sr)), "silence")


def tone(seconds: float, freq: float = 440.0, amplitude: float = 0.5, sr: int = SAMPLE_RATE,
         phase: float = 0.0, fade_ms: float = 10.0) -> np.ndarray:
    """A sine tone with short raised-cosine fades (no clicks)."""
    if not 0.0 <= amplitude <= PEAK_LIMIT:
        raise ValueError(f"amplitude must be in [0, {PEAK_LIMIT}]")
    n = num_samples(seconds, sr)
    t = np.arange(n) / sr
    x = amplitude * np.sin(2 * np.pi * freq * t + phase) * _fade(n, int(fade_ms * sr / 1000))
    return _finish(x, "tone")


def noise(seconds: float, seed: int = 0, amplitude: float = 0.1, sr: int = SAMPLE_RATE) -> np.ndarray:
    """White Gaussian noise with RMS ``amplitude / 3`` and peak never above ``amplitude``."""
    if not 0.0 <= amplitude <= PEAK_LIMIT:
        raise ValueError(f"amplitude must be in [0, {PEAK_LIMIT}]")
    n = num_samples(seconds, sr)
    rng = np.random.default_rng([seed, 0x6E6F6973])  # "nois"
    x = rng.standard_normal(n) * (amplitude / 3.0)
    peak = np.max(np.abs(x)) if n else 0.0
    if peak > amplitude:
        x *= amplitude / peak
    return _finish(x, "noise")


# Vowel formant targets (F1, F2, F3 in Hz), roughly adult-speaker values.
_VOWELS = np.array([
    [730, 1090, 2440],  # a
    [270, 2290, 3010],  # i
    [300, 870, 2240],   # u
    [530, 1840, 2480],  # e
    [570, 840, 2410],   # o
    [660, 1720, 2410],  # ae
    [490, 1350, 1690],  # er
], dtype=np.float64)
_BANDWIDTHS = np.array([90.0, 110.0, 170.0])
_FORMANT_GAINS = np.array([1.0, 0.6, 0.35])


def _voiced(n: int, sr: int, rng: np.random.Generator, f0_start: float, f0_end: float,
            v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
    """Harmonic segment: F0 glides f0_start->f0_end (+ vibrato/jitter), formants v0->v1."""
    t = np.arange(n) / sr
    u = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(n)
    # Pitch contour: linear glide + slow vibrato + smooth jitter.
    vib_rate = rng.uniform(4.0, 6.5)
    vib_depth = rng.uniform(0.005, 0.02)
    jitter = np.interp(u, np.linspace(0, 1, 6), rng.normal(0.0, 0.01, 6))
    f0 = (f0_start + (f0_end - f0_start) * u) * (1.0 + vib_depth * np.sin(2 * np.pi * vib_rate * t) + jitter)
    phase0 = np.cumsum(2 * np.pi * f0 / sr)
    # Formant trajectory (smoothstep between the two vowel targets).
    s = u * u * (3 - 2 * u)
    formants = v0[None, :] + (v1 - v0)[None, :] * s[:, None]  # [n, 3]
    out = np.zeros(n)
    k_max = int(min(7000.0, 0.45 * sr) / max(f0.min(), 50.0))
    start_phases = rng.uniform(0, 2 * np.pi, k_max + 1)
    for k in range(1, k_max + 1):
        fk = k * f0
        alive = fk < 0.45 * sr
        if not np.any(alive):
            break
        # Formant resonances (Lorentzian magnitude) times a -6 dB/octave source tilt.
        gain = np.zeros(n)
        for i in range(3):
            half_bw = _BANDWIDTHS[i] / 2.0 + 0.04 * formants[:, i]
            gain += _FORMANT_GAINS[i] / (1.0 + ((fk - formants[:, i]) / half_bw) ** 2)
        gain = (gain + 0.02) / k
        out += np.where(alive, gain * np.sin(k * phase0 + start_phases[k]), 0.0)
    # Glottal shimmer: slow amplitude wobble.
    out *= 1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(2.0, 4.0) * t + rng.uniform(0, 2 * np.pi))
    return out


def _unvoiced(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Fricative-like noise burst: white noise shaped to a high band (2.5-7 kHz centre)."""
    w = rng.standard_normal(n)
    spec = np.fft.rfft(w)
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    centre = rng.uniform(2500.0, 6500.0)
    width = rng.uniform(800.0, 2500.0)
    shape = np.exp(-0.5 * ((freqs - centre) / width) ** 2) + 0.05 * (freqs > 1000)
    return np.fft.irfft(spec * shape, n)


def speech_like(seconds: float, seed: int = 0, sr: int = SAMPLE_RATE, peak: float = 0.7) -> np.ndarray:
    """Speech-like signal: syllables (voiced harmonics with pitch contour and moving formants),
    fricative noise bursts, and short pauses; phrase-level pitch declination; peak ``peak``.
    """
    if not 0.0 < peak <= PEAK_LIMIT:
        raise ValueError(f"peak must be in (0, {PEAK_LIMIT}]")
    n_total = num_samples(seconds, sr)
    rng = np.random.default_rng([seed, 0x73706368])  # "spch"
    out = np.zeros(n_total)
    base_f0 = rng.uniform(100.0, 210.0)
    pos = int(rng.uniform(0.0, 0.08) * sr)  # small leading silence
    vowel = int(rng.integers(len(_VOWELS)))
    while pos < n_total:
        r = rng.random()
        if r < 0.62:  # voiced syllable nucleus
            n = int(rng.uniform(0.12, 0.32) * sr)
            nxt = int(rng.integers(len(_VOWELS)))
            phrase = pos / max(n_total, 1)
            f0a = base_f0 * (1.15 - 0.25 * phrase) * rng.uniform(0.9, 1.12)
            f0b = f0a * rng.uniform(0.8, 1.15)
            seg = _voiced(n, sr, rng, f0a, f0b, _VOWELS[vowel], _VOWELS[nxt])
            seg *= rng.uniform(0.5, 1.0) / (np.max(np.abs(seg)) + 1e-12)
            seg *= _fade(n, int(0.02 * sr))
            vowel = nxt
        elif r < 0.85:  # unvoiced burst
            n = int(rng.uniform(0.04, 0.14) * sr)
            seg = _unvoiced(n, sr, rng)
            seg *= rng.uniform(0.08, 0.3) / (np.max(np.abs(seg)) + 1e-12)
            seg *= _fade(n, int(0.008 * sr))
        else:  # pause (with a faint noise floor, like a real recording)
            n = int(rng.uniform(0.05, 0.35) * sr)
            seg = rng.standard_normal(n) * 3e-4
        end = min(pos + n, n_total)
        out[pos:end] += seg[: end - pos]
        pos = end
    # Fade the clip edges so truncation at n_total never produces a click.
    out *= _fade(n_total, int(0.005 * sr))
    m = np.max(np.abs(out)) if n_total else 0.0
    if m > 0:
        out *= peak / m
    return _finish(out, "speech_like")


_STANDARD_CACHE: "OrderedDict[str, np.ndarray] | None" = None


def standard_clips() -> "OrderedDict[str, np.ndarray]":
    """The named clips used by parity tests and benchmarks (fixed order, fixed content).

    Generated once per process; every call returns fresh copies (callers may mutate them).
    """
    global _STANDARD_CACHE
    if _STANDARD_CACHE is None:
        _STANDARD_CACHE = _make_standard_clips()
    return OrderedDict((k, v.copy()) for k, v in _STANDARD_CACHE.items())


def _make_standard_clips() -> "OrderedDict[str, np.ndarray]":
    clips: "OrderedDict[str, np.ndarray]" = OrderedDict()
    clips["short_0p6s"] = speech_like(0.6, seed=1)
    clips["speech_3s"] = speech_like(3.0, seed=2)
    clips["speech_10s"] = speech_like(10.0, seed=4)
    clips["speech_30s"] = speech_like(30.0, seed=3)
    clips["silence_2s"] = silence(2.0)
    tn = tone(5.0, freq=440.0, amplitude=0.3) + noise(5.0, seed=5, amplitude=0.05)
    clips["tone_noise_5s"] = _finish(tn, "tone_noise_5s")
    for name, x in clips.items():
        check_amplitude(x, limit=PEAK_LIMIT + 1e-6, name=name)
    return clips


if __name__ == "__main__":  # pragma: no cover - manual inspection aid
    for name, x in standard_clips().items():
        rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
        print(f"{name:14s} n={x.size:7d} ({x.size / SAMPLE_RATE:6.2f}s) peak={np.max(np.abs(x)):.3f} rms={rms:.4f}")
