"""Long audio, the one path the CLI and the Python API share: split into segments of at most
``max_seconds`` (`segment.split_audio`), decode the segments in batches planned by seconds of audio
(`batching.plan_batches`), join the texts (`segment.join_texts`).

A clip that fits in one segment gives exactly the model's text (`is_long` is False); otherwise the
segments' texts are joined, with no space between CJK characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .batching import plan_batches
from .segment import MAX_SEGMENT_SECONDS, join_texts, needs_space, split_audio

_WS = re.compile(r"\s+")


def segments_of(wav, sample_rate: int, max_seconds: float = MAX_SEGMENT_SECONDS, drop_silent: bool = True) -> list:
    """The segments a clip is decoded as (silent ones dropped, as a VAD would)."""
    return split_audio(wav, sample_rate, max_seconds=max_seconds, drop_silent=drop_silent)


def is_long(segs, n_samples: int) -> bool:
    """Whether a clip's transcript is a join of segments rather than one decoded text: it was split,
    or a silent part of it was dropped."""
    return len(segs) > 1 or bool(segs and segs[0].end - segs[0].start < n_samples)


def join(trs, long_audio: bool) -> tuple[str, str]:
    """(text, text_tn) of a clip from its segments' Transcriptions."""
    if not long_audio and len(trs) == 1:
        return trs[0].text, trs[0].text_tn  # exactly the model's output
    return join_texts(t.text for t in trs), join_texts(t.text_tn for t in trs)


class StreamJoiner:
    """What to print for each streamed piece so that the printed text equals `join`'s: whitespace
    runs become one space, segments are joined as `segment.join_texts` joins them."""

    def __init__(self):
        self.printed = ""

    def piece(self, text: str, first_of_segment: bool, later_segment: bool) -> str:
        text = _WS.sub(" ", text)  # as the final text does
        if later_segment and first_of_segment:
            text = text.lstrip()
            if text and self.printed and not self.printed.endswith(" ") and needs_space(self.printed[-1], text[0]):
                text = " " + text
        elif self.printed.endswith(" ") and text.startswith(" "):
            text = text[1:]
        self.printed += text
        return text


@dataclass
class LongTranscription:
    """The joined result of a segmented transcription, with each segment's time span."""

    text: str
    text_tn: str
    segments: list  # [(Segment, Transcription)]
    audio_seconds: float

    @property
    def stop_reasons(self) -> list:
        return [tr.stop_reason for _, tr in self.segments]


def transcribe_segmented(asr, audio, sample_rate=None, max_seconds: float = MAX_SEGMENT_SECONDS,
                         batch_size: int = 16, batch_seconds: float = 300.0, drop_silent: bool = True,
                         **decode) -> LongTranscription:
    """Transcribe a clip of any length (path or samples): split it into segments of at most
    `max_seconds`, decode them with ``asr.transcribe_batch(**decode)`` in batches of at most
    `batch_size` segments and `batch_seconds` padded seconds (the CLI's ``--batch-size`` and
    ``--batch-seconds``), and join the texts. A clip that fits in one segment gives exactly
    ``asr.transcribe``'s text."""
    fs = asr.cfg.frontend.fs
    wav = asr.load_audio(audio, sample_rate)
    segs = segments_of(wav, fs, max_seconds, drop_silent)
    trs: list = [None] * len(segs)
    for b in plan_batches([s.duration for s in segs], batch_seconds, max(1, int(batch_size))):
        for k, tr in zip(b, asr.transcribe_batch([segs[k].slice(wav) for k in b], **decode)):
            trs[k] = tr
    text, text_tn = join(trs, is_long(segs, wav.shape[0]))
    return LongTranscription(text, text_tn, list(zip(segs, trs)), wav.shape[0] / fs)
