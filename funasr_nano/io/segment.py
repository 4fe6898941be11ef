"""Long audio: split a clip into segments of at most 30 s, cutting at low-energy points.

Why not a neural VAD
--------------------
The reference pipeline (FunASR ``AutoModel(..., vad_model="fsmn-vad")``) segments long audio
with FSMN-VAD, a *separate* model with its own checkpoint (``iic/speech_fsmn_vad_zh-cn-16k-common``)
and config. It is not part of Fun-ASR-Nano-2512, is not shipped with it, and cannot be fetched
here (no model hub). Fun-ASR-Nano itself only needs the pieces to be short: its encoder and
prompt were trained on utterances of up to ~30 s. So this module uses a plain signal-energy
splitter, which needs no weights and is deterministic:

1. Short-time energy is measured in 200 ms windows every 10 ms (mean square, in dB relative
   to full scale), i.e. smoothed enough that a cut lands in a pause rather than between two
   pitch periods.
2. Greedily from the start: if what remains fits in ``max_seconds`` it is the last segment.
   Otherwise the cut goes at the quietest window inside ``[start + min_seconds, start +
   max_seconds]`` (also leaving at least ``min_seconds`` for what follows). Windows within
   ``tolerance_db`` of that minimum count as quiet; the cut goes in the middle of the *latest*
   run of quiet windows (so segments stay long and few), or, when that run is a silence that
   goes on past the search window, half a second into it (so the silence starts the next
   segment and can be dropped whole).
3. Optionally (``drop_silent``), segments whose loudest window is below ``silence_db`` are
   dropped, as a VAD would drop them; this never drops the only segment.

Differences from a VAD to keep in mind: leading/trailing silence inside a segment is kept
(it costs encoder time, not accuracy), and in speech without pauses the cut falls at the
quietest 200 ms even if that is mid-word. Segment times are exact sample offsets of the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_SEGMENT_SECONDS = 30.0


@dataclass(frozen=True)
class Segment:
    start: int  # first sample (inclusive)
    end: int    # last sample (exclusive)
    sample_rate: int = 16000

    @property
    def start_s(self) -> float:
        return self.start / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end / self.sample_rate

    @property
    def duration(self) -> float:
        return (self.end - self.start) / self.sample_rate

    def slice(self, wav: np.ndarray) -> np.ndarray:
        return wav[self.start:self.end]


def window_energy_db(wav: np.ndarray, sample_rate: int = 16000, window_s: float = 0.2,
                     hop_s: float = 0.01) -> tuple[np.ndarray, int, int]:
    """Mean-square energy in dBFS of windows of `window_s` every `hop_s`.

    Returns (energy_db [n_windows], window, hop) in samples; window i covers
    samples [i * hop, i * hop + window).
    """
    x = np.asarray(wav, dtype=np.float64)
    win = max(1, int(round(window_s * sample_rate)))
    hop = max(1, int(round(hop_s * sample_rate)))
    if x.shape[0] < win:
        win = max(1, x.shape[0])
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(0, x.shape[0] - win + 1, hop)
    ms = (c[starts + win] - c[starts]) / win
    return 10.0 * np.log10(np.maximum(ms, 1e-12)), win, hop


def split_audio(wav: np.ndarray, sample_rate: int = 16000, max_seconds: float = MAX_SEGMENT_SECONDS,
                min_seconds: float | None = None, tolerance_db: float = 3.0, drop_silent: bool = False,
                silence_db: float = -70.0) -> list[Segment]:
    """Segments covering `wav` (contiguous, in order), each at most `max_seconds` long.

    `min_seconds` (default: a sixth of `max_seconds`, 5 s) is the shortest segment a cut may leave
    on either side, unless the whole clip is shorter. With `drop_silent`, segments that are
    silent throughout (every 200 ms window below `silence_db` dBFS) are left out.
    """
    n = int(np.asarray(wav).shape[0])
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    max_len = max(1, int(max_seconds * sample_rate))
    if min_seconds is None:
        min_seconds = max_seconds / 6.0
    min_len = int(min(max(min_seconds, 0.0), max_seconds / 2.0) * sample_rate)
    if n == 0:
        return []
    if n <= max_len:
        return [Segment(0, n, sample_rate)]

    energy, win, hop = window_energy_db(wav, sample_rate)
    centres = np.arange(energy.shape[0]) * hop + win // 2  # sample at the middle of each window
    cuts, start = [], 0
    while n - start > max_len:
        lo = start + max(min_len, 1)
        hi = min(start + max_len, n - min_len)
        if hi <= lo:  # cannot honour min_len on both sides: cut at the limit
            cut = start + max_len
        else:
            i0 = int(np.searchsorted(centres, lo, side="left"))
            i1 = int(np.searchsorted(centres, hi, side="right"))
            if i1 <= i0:
                cut = hi
            else:
                cut = _quiet_point(energy[i0:i1], centres[i0:i1], tolerance_db, int(0.5 * sample_rate))
        cut = min(max(cut, start + 1), start + max_len)
        cuts.append(cut)
        start = cut
    bounds = [0] + cuts + [n]
    segs = [Segment(a, b, sample_rate) for a, b in zip(bounds[:-1], bounds[1:])]
    if drop_silent and len(segs) > 1:
        loud = [s for s in segs if not _silent(wav, s, sample_rate, silence_db)]
        segs = loud
    return segs


def _quiet_point(e: np.ndarray, centres: np.ndarray, tolerance_db: float, margin: int) -> int:
    """Where to cut in a search window: the last run of windows within `tolerance_db` of the
    quietest one; its middle, or, if the run reaches the window's end (a long silence going on
    past it), `margin` samples into the run, so the silence goes to the next segment."""
    quiet = e <= e.min() + tolerance_db
    last = int(np.flatnonzero(quiet)[-1])
    first = last
    while first > 0 and quiet[first - 1]:
        first -= 1
    if last == e.shape[0] - 1 and first < last:
        if first == 0:  # quiet throughout: make the segment as long as allowed
            return int(centres[last])
        return int(min(centres[first] + margin, centres[last]))
    return int((centres[first] + centres[last]) // 2)


def _silent(wav: np.ndarray, seg: Segment, sample_rate: int, silence_db: float) -> bool:
    e, _, _ = window_energy_db(seg.slice(wav), sample_rate)
    return bool(e.size == 0 or e.max() < silence_db)


_CJK_RANGES = ((0x3000, 0x303F), (0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF),
               (0xAC00, 0xD7AF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF))


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return any(a <= o <= b for a, b in _CJK_RANGES)


def needs_space(left: str, right: str) -> bool:
    """Whether two transcript pieces meeting at characters ``left`` | ``right`` get a space between
    them: none between CJK characters, one otherwise."""
    return not (_is_cjk(left) and _is_cjk(right))


def join_texts(texts) -> str:
    """Join segment transcripts: no separator between CJK text, one space otherwise."""
    out = ""
    for t in texts:
        t = (t or "").strip()
        if not t:
            continue
        if out and needs_space(out[-1], t[0]):
            out += " "
        out += t
    return out
