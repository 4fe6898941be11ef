"""Long-audio segmentation, text joining, duration batching and the output writers."""

import functools
import json

import numpy as np
import pytest

from funasr_nano.io import formats
from funasr_nano.io.batching import chunk_by_seconds, plan_batches
from funasr_nano.io.segment import Segment, join_texts, split_audio, window_energy_db
from funasr_nano.synthetic.signals import speech_like

FS = 16000


def _check_cover(segs, n, max_s):
    assert segs[0].start == 0 and segs[-1].end == n
    for a, b in zip(segs[:-1], segs[1:]):
        assert a.end == b.start  # contiguous, in order
    for s in segs:
        assert 0 < s.end - s.start <= int(max_s * FS)


@functools.lru_cache(maxsize=None)
def _base(seed):
    return speech_like(5.0, seed=seed)


def _speech(seconds, seed=0):
    """Speech-like signal of any length, tiled from a cached 5 s clip (generation is slow)."""
    return np.resize(_base(seed % 3), int(seconds * FS))


def _with_pauses(parts_s, pause_s=0.6, seed=0):
    """Speech-like bursts separated by digital silence; returns (wav, pause centres in s)."""
    out, centres, t = [], [], 0.0
    for k, d in enumerate(parts_s):
        x = _speech(d, seed=seed + k)
        out.append(x)
        t += d
        if k < len(parts_s) - 1:
            out.append(np.zeros(int(pause_s * FS), np.float32))
            centres.append(t + pause_s / 2)
            t += pause_s
    return np.concatenate(out), centres


def test_short_audio_is_one_segment():
    x = _speech(12.0)
    assert split_audio(x, FS) == [Segment(0, x.shape[0], FS)]
    assert split_audio(x[:1], FS) == [Segment(0, 1, FS)]
    assert split_audio(np.zeros(0, np.float32), FS) == []


def test_cuts_fall_in_pauses():
    wav, pauses = _with_pauses([20.0, 18.0, 25.0, 9.0])
    segs = split_audio(wav, FS, max_seconds=30.0)
    _check_cover(segs, wav.shape[0], 30.0)
    assert len(segs) == 4
    for s, centre in zip(segs[:-1], pauses):
        assert abs(s.end_s - centre) < 0.31, (s.end_s, centre)  # inside the 0.6 s pause


def test_no_pause_still_bounded_and_min_length():
    rng = np.random.default_rng(0)
    wav = (rng.standard_normal(FS * 95) * 0.1).astype(np.float32)
    segs = split_audio(wav, FS, max_seconds=30.0)
    _check_cover(segs, wav.shape[0], 30.0)
    assert all(s.duration >= 5.0 - 1e-6 for s in segs)  # min_seconds = max / 6


@pytest.mark.parametrize("max_s", [1.0, 5.0, 7.5, 30.0])
def test_bounds_for_many_lengths(max_s):
    for secs in (max_s * 1.01, max_s * 2.5, max_s * 7 + 0.3):
        wav = _speech(secs, seed=1)
        _check_cover(split_audio(wav, FS, max_seconds=max_s), wav.shape[0], max_s)


def test_drop_silent_segments():
    wav, _ = _with_pauses([20.0, 20.0])
    wav = np.concatenate([wav, np.zeros(FS * 40, np.float32)])  # 40 s of silence at the end
    all_segs = split_audio(wav, FS)
    kept = split_audio(wav, FS, drop_silent=True)
    assert len(kept) < len(all_segs)
    assert kept[-1].end_s <= 41.5  # cut 0.5 s into the final silence
    silent = np.zeros(FS * 70, np.float32)
    assert split_audio(silent, FS, drop_silent=True) == []  # nothing to transcribe
    assert len(split_audio(silent[: FS * 5], FS, drop_silent=True)) == 1  # never the only one


def test_window_energy():
    e, win, hop = window_energy_db(np.ones(FS, np.float32) * 0.5, FS)
    assert win == 3200 and hop == 160
    assert np.allclose(e, 10 * np.log10(0.25))
    e, win, _ = window_energy_db(np.ones(10, np.float32), FS)  # shorter than a window
    assert win == 10 and e.shape == (1,)


def test_join_texts():
    assert join_texts(["你好", "世界"]) == "你好世界"
    assert join_texts([" hello", "world "]) == "hello world"
    assert join_texts(["你好。", "hello", "", "  ", "再见"]) == "你好。 hello 再见"
    assert join_texts([]) == ""


def test_plan_batches_sorted_and_budgeted():
    d = [3.0, 30.0, 1.0, 10.0, 10.0, 2.0, 29.0, 0.5]
    b = plan_batches(d, max_seconds=60.0, max_size=3)
    assert sorted(i for x in b for i in x) == list(range(len(d)))
    flat = [i for x in b for i in x]
    assert [d[i] for i in flat] == sorted(d, reverse=True)  # longest first
    for x in b:
        assert len(x) <= 3
        assert len(x) == 1 or len(x) * max(d[i] for i in x) <= 60.0
    assert b[0] == [1, 6]  # 30 + 29: a third row would pad to 90 s
    assert plan_batches([100.0, 1.0], max_seconds=50.0) == [[0], [1]]  # oversized item alone
    assert plan_batches([], 10.0) == []
    assert plan_batches([1.0] * 5, 100.0, max_size=1) == [[0], [1], [2], [3], [4]]
    with pytest.raises(ValueError):
        plan_batches([1.0], 10.0, max_size=0)


def test_chunk_by_seconds():
    assert chunk_by_seconds([5, 5, 5, 20, 1], 10) == [[0, 1], [2], [3], [4]]
    assert chunk_by_seconds([], 10) == []


# ----- output writers -----------------------------------------------------------------------


def _result():
    r = formats.FileResult("dir/a.wav", text="hello world", text_tn="hello world", duration=65.25)
    r.segments = [formats.SegmentResult(0.0, 29.5, "hello", "eos", 3),
                  formats.SegmentResult(29.5, 61.0, "", "eos", 0),
                  formats.SegmentResult(61.0, 65.25, "world --> x", "repetition", 5)]
    r.timings = {"encoder": 0.5, "decode": 1.25}
    return r


def test_timestamps():
    assert formats.srt_timestamp(0) == "00:00:00,000"
    assert formats.srt_timestamp(3725.0405) == "01:02:05,040"
    assert formats.vtt_timestamp(59.9996) == "00:01:00.000"
    assert formats.vtt_timestamp(float("nan")) == "00:00:00.000"


def test_srt_vtt():
    r = _result()
    srt = formats.to_srt(r)
    assert srt == ("1\n00:00:00,000 --> 00:00:29,500\nhello\n\n"
                   "2\n00:01:01,000 --> 00:01:05,250\nworld --> x\n\n")
    vtt = formats.to_vtt(r)
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:29.500\nhello\n\n")
    assert "00:01:01.000 --> 00:01:05.250\nworld -> x\n" in vtt  # '-->' may not appear in a cue
    assert "NOTE synthetic weights" in formats.to_vtt(r, synthetic=True)
    assert formats.to_srt(r, synthetic=True).startswith("NOTE synthetic weights")


def test_json_and_text():
    ok, bad = _result(), formats.FileResult("b.wav", error="b.wav: file is empty (0 bytes)")
    doc = json.loads(formats.to_json([ok, bad], {"model": "m"}, synthetic=True))
    assert doc["synthetic_weights"] is True and "synthetic weights" in doc["note"]
    f0, f1 = doc["files"]
    assert f0["text"] == "hello world" and f0["duration"] == 65.25
    assert f0["timings"] == {"encoder_ms": 500.0, "decode_ms": 1250.0}
    assert f0["repetition_stopped"] is True and f0["error"] is None
    assert [s["end"] for s in f0["segments"]] == [29.5, 61.0, 65.25]
    assert f1 == {"file": "b.wav", "error": "b.wav: file is empty (0 bytes)"}
    assert formats.to_text([ok]) == "hello world\n"
    assert formats.to_text([ok, bad]) == "dir/a.wav\thello world\n"
    assert json.loads(formats.to_json([ok]))["synthetic_weights"] is False
    with pytest.raises(ValueError):
        formats.render([ok, ok], "srt")
