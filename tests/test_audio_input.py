"""Audio input through `load_audio` and the Python API: formats, resampling, channels, PCM
types and every kind of bad input (each gives a result or one AudioError naming the file)."""

import numpy as np
import pytest
import soundfile as sf

import funasr_nano
from funasr_nano.io.audio import AudioError, audio_duration, load_audio
from funasr_nano.io.longform import transcribe_segmented
from funasr_nano.synthetic.signals import speech_like, tone

FS = 16000


@pytest.fixture(scope="module")
def asr(tiny_ckpt, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("FUNASR_NANO_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        yield funasr_nano.load(tiny_ckpt)
    finally:
        mp.undo()


def _dominant_hz(x, fs=FS):
    spec = np.abs(np.fft.rfft(x * np.hanning(x.shape[0])))
    return np.argmax(spec) * fs / x.shape[0]


# ----- formats, rates, channels, PCM types ---------------------------------------------------


@pytest.mark.parametrize("ext,kw,tol", [
    ("wav", {"subtype": "PCM_16"}, 1e-4),
    ("wav", {"subtype": "PCM_24"}, 1e-6),
    ("wav", {"subtype": "PCM_32"}, 1e-6),
    ("wav", {"subtype": "FLOAT"}, 0),
    ("wav", {"subtype": "PCM_U8"}, 1e-2),
    ("flac", {}, 1e-4),
    ("ogg", {}, None),
    ("mp3", {}, None),
])
def test_formats(tmp_path, ext, kw, tol):
    x = tone(1.0, 440.0, 0.5)
    p = tmp_path / f"a.{ext}"
    sf.write(p, x, FS, **kw)
    y = load_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1
    if tol is None:  # lossy codecs: same length (to the codec's padding), same pitch
        assert abs(y.shape[0] - x.shape[0]) < 0.1 * FS
        assert abs(_dominant_hz(y) - 440.0) < 3.0
    else:
        assert y.shape == x.shape
        np.testing.assert_allclose(y, x, atol=tol)
    assert abs(audio_duration(p) - 1.0) < 0.1


@pytest.mark.parametrize("sr", [8000, 11025, 22050, 44100, 48000, 96000])
def test_resampling(tmp_path, sr):
    t = np.arange(int(1.5 * sr)) / sr
    x = (0.4 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    sf.write(tmp_path / "r.wav", x, sr, subtype="FLOAT")
    y = load_audio(tmp_path / "r.wav")
    assert abs(y.shape[0] - int(1.5 * FS)) <= 1
    assert abs(_dominant_hz(y) - 1000.0) < 2.0
    assert abs(np.abs(y[FS // 4: -FS // 4]).max() - 0.4) < 0.02  # level preserved
    np.testing.assert_allclose(load_audio(x, sample_rate=sr), y, atol=1e-6)  # arrays too


@pytest.mark.parametrize("channels", [2, 3, 6])
def test_channels_mixed_to_mono(tmp_path, channels):
    x = speech_like(1.0)
    gains = np.linspace(1.0, 0.2, channels)
    multi = (x[:, None] * gains[None]).astype(np.float32)
    sf.write(tmp_path / "m.wav", multi, FS, subtype="FLOAT")
    y = load_audio(tmp_path / "m.wav")
    np.testing.assert_allclose(y, x * gains.mean(), atol=1e-6)
    np.testing.assert_allclose(load_audio(multi), y, atol=1e-6)     # [N, C]
    np.testing.assert_allclose(load_audio(multi.T), y, atol=1e-6)   # [C, N]


def test_integer_arrays():
    x = np.array([0, 16384, -32768, 32767], np.int16)
    np.testing.assert_allclose(load_audio(x), [0, 0.5, -1.0, 32767 / 32768])
    u = np.array([128, 255, 0], np.uint8)  # 8-bit PCM is unsigned, centred on 128
    np.testing.assert_allclose(load_audio(u), [0.0, 127 / 128, -1.0])
    i32 = np.array([2 ** 30], np.int32)
    np.testing.assert_allclose(load_audio(i32), [0.5])


def test_clipped_audio_is_kept(tmp_path):
    x = np.clip(tone(1.0, 300.0, 0.9) * 3.0, -1.0, 1.0).astype(np.float32)  # square-ish, at full scale
    sf.write(tmp_path / "c16.wav", x, FS, subtype="PCM_16")
    y = load_audio(tmp_path / "c16.wav")
    assert np.abs(y).max() >= 0.999
    over = (tone(1.0, 300.0, 0.9) * 1.5).astype(np.float32)  # float WAV beyond +-1
    sf.write(tmp_path / "over.wav", over, FS, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "over.wav"), over)


# ----- bad input: one clear AudioError naming the file ---------------------------------------


def _write_bad(tmp_path, kind):
    p = tmp_path / f"{kind}.wav"
    if kind == "empty_file":
        p.write_bytes(b"")
    elif kind == "zero_length":
        sf.write(p, np.zeros(0, np.float32), FS)
    elif kind == "corrupt":
        sf.write(p, speech_like(0.5), FS)
        data = bytearray(p.read_bytes())
        data[:12] = b"\x00" * 12  # destroy the RIFF header
        p.write_bytes(bytes(data))
    elif kind == "not_audio":
        p = tmp_path / "notes.mp3"
        p.write_text("this is a text file, not audio\n" * 20)
    elif kind == "nan":
        x = speech_like(0.5)
        x[100] = np.nan
        sf.write(p, x, FS, subtype="FLOAT")
    elif kind == "inf":
        x = speech_like(0.5)
        x[-1] = np.inf
        sf.write(p, x, FS, subtype="FLOAT")
    elif kind == "directory":
        p.mkdir()
    elif kind == "missing":
        pass
    return p


BAD = {
    "empty_file": "file is empty",
    "zero_length": "audio is empty",
    "corrupt": "cannot decode audio",
    "not_audio": "cannot decode audio",
    "nan": "NaN or infinite",
    "inf": "NaN or infinite",
    "directory": "is a directory",
    "missing": "no such file",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files(tmp_path, kind):
    p = _write_bad(tmp_path, kind)
    with pytest.raises(AudioError) as ei:
        load_audio(p)
    msg = str(ei.value)
    assert msg.startswith(str(p)) and BAD[kind] in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("bad,what", [
    (np.zeros(0, np.float32), "audio is empty"),
    (np.zeros((2, 0), np.float32), "audio is empty"),
    (np.array([0.1, np.nan], np.float32), "NaN"),
    (np.array([np.inf] * 10, np.float64), "NaN"),
    (np.zeros((2, 2, 2), np.float32), "1-D or 2-D"),
    (np.array(["a", "b"]), "not numeric"),
    (np.zeros(10, bool), "bool"),
])
def test_bad_arrays(bad, what):
    with pytest.raises(AudioError, match=what):
        load_audio(bad)


def test_too_short_to_resample():
    with pytest.raises(AudioError, match="too short to resample"):
        load_audio(np.ones(1, np.float32), sample_rate=44100)


# ----- the Python API on awkward but valid input ----------------------------------------------


@pytest.mark.parametrize("name,x", [
    ("shorter_than_a_frame", speech_like(0.02)),  # 320 samples < 400: the frame shrinks to the clip
    ("silence", np.zeros(FS, np.float32)),
    ("clipped", np.clip(tone(0.5, 300.0, 0.9) * 3, -1, 1).astype(np.float32)),
    ("int16", (speech_like(0.5) * 32767).astype(np.int16)),
])
def test_api_valid_edge_cases(asr, name, x):
    r = asr.transcribe(x, max_new_tokens=4)
    assert r.n_audio_tokens >= 1 and r.stop_reason in ("eos", "max_new_tokens")
    assert isinstance(r.text, str)


@pytest.mark.parametrize("n", [1, 160, 256])
def test_api_too_short_for_any_frame(asr, n):
    """Under 257 samples (16 ms) the 256-point FFT leaves some mel filters without a bin; the
    reference (kaldi) refuses such input, and so does this port, with one clear error."""
    with pytest.raises(AudioError, match="too short"):
        asr.transcribe(np.full(n, 0.1, np.float32), max_new_tokens=2)


def test_api_errors(asr, tmp_path):
    with pytest.raises(AudioError, match="audio is empty"):
        asr.transcribe(np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="NaN"):
        asr.transcribe(np.full(100, np.nan, np.float32))
    p = _write_bad(tmp_path, "corrupt")
    with pytest.raises(AudioError, match=str(p)):
        asr.transcribe(p)
    with pytest.raises(AudioError, match=str(p)):  # one bad row fails the batch call...
        asr.transcribe_batch([speech_like(0.5), p])


def test_api_long_audio_segmented(asr, tmp_path):
    """A 10-minute file through the Python API: split into <= 30 s pieces, silent ones dropped,
    the rest batched and joined. (Mostly silence keeps it fast; the CLI test decodes 10 busy
    minutes.)"""
    block = np.concatenate([speech_like(5.0), np.zeros(FS // 2, np.float32)])
    x = np.zeros(FS * 600, np.float32)
    x[: FS * 55] = np.tile(block, 10)
    x[-FS * 22:] = np.tile(block, 4)[: FS * 22]
    sf.write(tmp_path / "ten_minutes.flac", x, FS)
    assert audio_duration(tmp_path / "ten_minutes.flac") == pytest.approx(600.0)
    res = transcribe_segmented(asr, tmp_path / "ten_minutes.flac", max_new_tokens=2, batch_size=8)
    assert res.audio_seconds == pytest.approx(600.0)
    segs = [s for s, _ in res.segments]
    assert 3 <= len(segs) <= 5
    assert segs[0].start == 0 and segs[-1].end == FS * 600
    assert all(s.duration <= 30.0 for s in segs)
    assert all(a.end <= b.start for a, b in zip(segs[:-1], segs[1:]))
    assert segs[-1].start_s >= 570.0  # the silent middle was skipped
    from funasr_nano.io.segment import join_texts
    assert res.text == join_texts(tr.text for _, tr in res.segments)
    # one segment: exactly transcribe()'s text
    short = transcribe_segmented(asr, x[: FS * 3], max_new_tokens=3)
    assert len(short.segments) == 1
    assert short.text == asr.transcribe(x[: FS * 3], max_new_tokens=3).text
