"""Output writers for the CLI: plain text, JSON, SRT and WebVTT.

A :class:`FileResult` holds one input file's outcome (joined text, duration, per-segment
times and texts, per-stage timings, or an error). Writers return strings; the CLI decides
where they go. Anything produced with synthetic (random) weights is labelled: a field in
JSON, a ``NOTE`` block in VTT, and a leading ``NOTE`` paragraph in SRT (SRT has no comment
syntax; players that follow the de-facto grammar skip text before the first cue number).

JSON per file: ``file``, ``text``, ``text_tn``, ``duration`` (s), ``segments`` (``start``/``end`` in
s, ``text``, ``stop_reason``, ``tokens``), ``timings`` (``<stage>_ms``; a file decoded in a batch
with others gets the batch's stage times shared out in proportion to its seconds of audio, so
the files' timings add up to the wall time), ``rtf``, ``stop_reasons``, ``repetition_stopped``,
``batch_sizes`` and ``error`` (null, or the one-line message; failed files carry only ``file``
and ``error``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field


def json_safe(x):
    """A value strict JSON can hold: NaN/inf -> None, numpy scalars -> Python numbers, keys -> str."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return x

SYNTHETIC_NOTE = ("synthetic weights: this model holds seeded random numbers, not the trained "
                  "Fun-ASR-Nano-2512; its transcripts are meaningless")
FORMATS = ("text", "json", "srt", "vtt")
EXTENSIONS = {"text": ".txt", "json": ".json", "srt": ".srt", "vtt": ".vtt"}


@dataclass
class SegmentResult:
    start: float  # seconds
    end: float
    text: str
    stop_reason: str = "eos"
    n_tokens: int = 0


@dataclass
class FileResult:
    path: str
    text: str = ""
    text_tn: str = ""
    duration: float = 0.0
    segments: list = field(default_factory=list)   # list[SegmentResult]
    timings: dict = field(default_factory=dict)    # stage -> seconds (this file's share)
    error: str | None = None
    batch_sizes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def repetition(self) -> bool:
        return any(s.stop_reason == "repetition" for s in self.segments)

    @property
    def stop_reasons(self) -> list:
        return [s.stop_reason for s in self.segments]


def _ms(seconds: float) -> float:
    return round(1000.0 * float(seconds), 3)


def file_record(r: FileResult) -> dict:
    """The JSON object for one file."""
    if not r.ok:
        return {"file": r.path, "error": r.error}
    rec = {
        "file": r.path,
        "text": r.text,
        "text_tn": r.text_tn,
        "duration": round(r.duration, 6),
        "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                      "stop_reason": s.stop_reason, "tokens": s.n_tokens} for s in r.segments],
        "timings": {f"{k}_ms": _ms(v) for k, v in r.timings.items()},
        "rtf": (round(sum(r.timings.values()) / r.duration, 4) if r.duration and r.timings else None),
        "stop_reasons": r.stop_reasons,
        "repetition_stopped": r.repetition,
        "batch_sizes": r.batch_sizes,
        "error": None,
    }
    return rec


def to_json(results, meta: dict | None = None, synthetic: bool = False) -> str:
    doc = dict(meta or {})
    doc["synthetic_weights"] = bool(synthetic)
    if synthetic:
        doc["note"] = SYNTHETIC_NOTE
    doc["files"] = [file_record(r) for r in results]
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def to_text(results, with_names: bool | None = None) -> str:
    """One line per file: the text, or ``path<TAB>text`` when there are several files.
    Failed files are left out (their errors go to stderr)."""
    results = list(results)
    if with_names is None:
        with_names = len(results) > 1
    lines = []
    for r in results:
        if not r.ok:
            continue
        text = r.text.replace("\n", " ")
        lines.append(f"{r.path}\t{text}" if with_names else text)
    return "".join(line + "\n" for line in lines)


def _timestamp(seconds: float, sep: str) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0.0
    total_ms = int(round(seconds * 1000.0))
    h, rem = divmod(total_ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt_timestamp(seconds: float) -> str:
    return _timestamp(seconds, ",")


def vtt_timestamp(seconds: float) -> str:
    return _timestamp(seconds, ".")


def _cues(r: FileResult):
    for s in r.segments:
        text = " ".join((s.text or "").split())
        if text:
            yield s.start, s.end, text


def to_srt(r: FileResult, synthetic: bool = False) -> str:
    out = []
    if synthetic:
        out.append(f"NOTE {SYNTHETIC_NOTE}\n\n")
    for i, (a, b, text) in enumerate(_cues(r), 1):
        out.append(f"{i}\n{srt_timestamp(a)} --> {srt_timestamp(b)}\n{text}\n\n")
    return "".join(out)


def to_vtt(r: FileResult, synthetic: bool = False) -> str:
    out = ["WEBVTT\n\n"]
    if synthetic:
        out.append(f"NOTE {SYNTHETIC_NOTE}\n\n")
    for a, b, text in _cues(r):
        out.append(f"{vtt_timestamp(a)} --> {vtt_timestamp(b)}\n{text.replace('-->', '->')}\n\n")
    return "".join(out)


def render(results, fmt: str, meta: dict | None = None, synthetic: bool = False) -> str:
    """All results in one document (srt/vtt: only for a single file)."""
    results = list(results)
    if fmt == "text":
        return to_text(results)
    if fmt == "json":
        return to_json(results, meta, synthetic)
    ok = [r for r in results if r.ok]
    if len(ok) > 1:
        raise ValueError(f"{fmt} output holds one file; use --output-dir for several")
    if not ok:
        return ""
    return to_srt(ok[0], synthetic) if fmt == "srt" else to_vtt(ok[0], synthetic)


def render_one(r: FileResult, fmt: str, meta: dict | None = None, synthetic: bool = False) -> str:
    """The document for one file (used with --output-dir)."""
    if fmt == "text":
        return to_text([r], with_names=False)
    if fmt == "json":
        return to_json([r], meta, synthetic)
    return to_srt(r, synthetic) if fmt == "srt" else to_vtt(r, synthetic)
