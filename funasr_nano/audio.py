"""Audio input: files or arrays -> mono float32 at the model's sample rate, with checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class AudioError(ValueError):
    pass


def _to_float(x: np.ndarray) -> np.ndarray:
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        scale = float(max(-info.min, info.max + 1))
        return x.astype(np.float32) / scale
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"audio array dtype {x.dtype} is not numeric")
    return x.astype(np.float32, copy=False)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    import soxr

    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32)


def load_audio(audio, sample_rate: int | None = None, target_rate: int = 16000) -> np.ndarray:
    """Return mono float32 samples at `target_rate`.

    `audio` is a path (anything libsndfile reads), or an array of samples; arrays are assumed
    to be at `target_rate` unless `sample_rate` says otherwise. Multi-channel input is averaged
    ([N, C] or [C, N] with C <= 8). Integer arrays are scaled to [-1, 1).
    """
    if isinstance(audio, (str, Path)):
        path = Path(audio)
        if not path.is_file():
            raise AudioError(f"audio file not found: {path}")
        import soundfile as sf

        try:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:  # libsndfile's errors are terse: name the file
            raise AudioError(f"cannot decode audio file {path}: {e}") from e
        x, sample_rate = data.mean(axis=1), sr
    else:
        x = _to_float(np.asarray(audio))
        if x.ndim == 2:
            ch_axis = 0 if x.shape[0] <= 8 and x.shape[0] < x.shape[1] else 1
            x = x.mean(axis=ch_axis)
        elif x.ndim != 1:
            raise AudioError(f"audio array must be 1-D or 2-D (samples x channels), got shape {x.shape}")
        sample_rate = sample_rate or target_rate
    if x.size == 0:
        raise AudioError("audio is empty (0 samples)")
    if not np.all(np.isfinite(x)):
        raise AudioError("audio contains NaN or infinite samples")
    return resample(np.ascontiguousarray(x, np.float32), int(sample_rate), target_rate)
