"""Audio input: files or arrays -> mono float32 at the model's sample rate, with checks.

Files are decoded by libsndfile (through ``soundfile``): WAV (any PCM/float subtype), FLAC,
OGG/Vorbis/Opus and, with libsndfile >= 1.1, MP3. Any sample rate is resampled with soxr
(HQ); any channel count is averaged to mono. Every error is an :class:`AudioError` whose
message starts with the file name (or "audio array" for in-memory input).

What is *not* an error (the reference accepts it too, and so do we): pure silence, clipped
samples (|x| >= 1, kept as they are, as the reference's loaders keep them), integer PCM of
any width (scaled to [-1, 1)), and clips shorter than one 25 ms fbank frame (the Kaldi
frontend shrinks the frame to the clip).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Extensions the CLI picks up when it is given a folder (libsndfile decides what really decodes).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf",
                    ".w64", ".rf64")


class AudioError(ValueError):
    pass


def _to_float(x: np.ndarray, where: str = "audio array") -> np.ndarray:
    if x.dtype == np.bool_:
        raise AudioError(f"{where}: dtype bool is not audio")
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        if info.min == 0:  # unsigned PCM (e.g. 8-bit WAV) is offset by half its range
            mid = (int(info.max) + 1) // 2
            return (x.astype(np.float64) - mid).astype(np.float32) / np.float32(mid)
        scale = float(max(-int(info.min), int(info.max) + 1))
        return (x.astype(np.float64) / scale).astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"{where}: array dtype {x.dtype} is not numeric audio")
    return x.astype(np.float32, copy=False)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    import soxr

    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32)


def _check_path(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise AudioError(f"{path}: cannot read ({e.strerror or e})") from e
    if size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: permission denied")


def _decode_error(path: Path, e: Exception) -> AudioError:
    msg = str(e)
    # soundfile prefixes "Error opening '<path>': "; we already name the file.
    if msg.startswith("Error opening"):
        msg = msg.split(": ", 1)[-1]
    if "Format not recognised" in msg or "unknown format" in msg.lower():
        msg = "not a recognised audio file (corrupt, or not audio)"
    return AudioError(f"{path}: cannot decode audio: {msg}")


def audio_duration(path) -> float:
    """Duration in seconds from the file header (no decoding). Raises AudioError."""
    path = Path(path)
    _check_path(path)
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:
        raise _decode_error(path, e) from e
    if info.samplerate <= 0:
        raise AudioError(f"{path}: invalid sample rate {info.samplerate}")
    return float(info.frames) / float(info.samplerate)


def read_audio_file(path) -> tuple[np.ndarray, int]:
    """Decode a file: (samples [N, C] float32, sample rate). Raises AudioError naming the file."""
    path = Path(path)
    _check_path(path)
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile's errors are terse: name the file
        raise _decode_error(path, e) from e
    if sr <= 0:
        raise AudioError(f"{path}: invalid sample rate {sr}")
    return data, int(sr)


def load_audio(audio, sample_rate: int | None = None, target_rate: int = 16000) -> np.ndarray:
    """Return mono float32 samples at `target_rate`.

    `audio` is a path (anything libsndfile reads), or an array of samples; arrays are assumed
    to be at `target_rate` unless `sample_rate` says otherwise. Multi-channel input is averaged
    ([N, C] or [C, N] with C <= 8). Integer arrays are scaled to [-1, 1) (unsigned ones are
    centred first). Raises AudioError for empty input, NaN/Inf samples and undecodable files.
    """
    if isinstance(audio, (str, os.PathLike)):
        where = str(audio)
        data, sample_rate = read_audio_file(audio)
        x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    else:
        where = "audio array"
        x = _to_float(np.asarray(audio), where)
        if x.ndim == 2:
            if 0 in x.shape:
                raise AudioError(f"{where}: audio is empty (shape {x.shape})")
            ch_axis = 0 if x.shape[0] <= 8 and x.shape[0] < x.shape[1] else 1
            x = x.mean(axis=ch_axis)
        elif x.ndim != 1:
            raise AudioError(f"{where}: audio array must be 1-D or 2-D (samples x channels), got shape {x.shape}")
        sample_rate = sample_rate or target_rate
        if int(sample_rate) <= 0:
            raise AudioError(f"{where}: invalid sample rate {sample_rate}")
    if x.size == 0:
        raise AudioError(f"{where}: audio is empty (0 samples)")
    bad = ~np.isfinite(x)
    if bad.any():
        raise AudioError(f"{where}: audio contains {int(bad.sum())} NaN or infinite samples "
                         f"(first at {np.argmax(bad) / int(sample_rate):.3f} s)")
    y = resample(np.ascontiguousarray(x, np.float32), int(sample_rate), target_rate)
    if y.size == 0:
        raise AudioError(f"{where}: audio is too short to resample ({x.size} samples at {sample_rate} Hz)")
    return y
