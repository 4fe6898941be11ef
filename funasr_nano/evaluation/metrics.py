"""Word / character error rates with jiwer, corpus-level (micro) as the field reports them.

rate = (S + D + I) / (H + S + D), summed over all scored utterances (not a mean of per-utterance
rates). WER aligns whitespace-separated words of the normalised text (``jiwer.process_words``); CER
aligns characters of the normalised text with all whitespace removed (``jiwer.process_characters``;
jiwer's own ``cer`` would count spaces as characters).

Empty references: jiwer returns a count, not a rate, when a call's references hold no unit at all,
so they are handled here. ``empty_references="skip"`` (the Open ASR Leaderboard's rule) leaves
utterances whose normalised reference is empty out of the corpus numbers (they are still listed, with
their insertions); ``"count"`` adds their insertions to the numerator. A corpus with no reference unit
has an undefined rate: NaN, never jiwer's count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class ErrorCounts:
    hits: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def ref_units(self) -> int:
        """Words (WER) or characters (CER) in the reference: H + S + D."""
        return self.hits + self.substitutions + self.deletions

    @property
    def hyp_units(self) -> int:
        return self.hits + self.substitutions + self.insertions

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """(S + D + I) / (H + S + D); NaN when the reference has no unit."""
        return self.errors / self.ref_units if self.ref_units else math.nan

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(self.hits + other.hits, self.substitutions + other.substitutions,
                           self.deletions + other.deletions, self.insertions + other.insertions)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(ref_units=self.ref_units, errors=self.errors, rate=None if math.isnan(self.rate) else self.rate)
        return d


def _jiwer():
    try:
        import jiwer
    except ImportError as e:
        raise ImportError("scoring needs jiwer: pip install 'funasr-nano-mlx[eval]' (or pip install jiwer)") from e
    return jiwer


def _prepare(texts: list[str], metric: str) -> list[str]:
    if metric == "wer":
        return [" ".join(t.split()) for t in texts]
    if metric == "cer":
        return ["".join(t.split()) for t in texts]
    raise ValueError(f"unknown metric {metric!r}; choose 'wer' or 'cer'")


def utterance_counts(refs: list[str], hyps: list[str], metric: str) -> list[ErrorCounts]:
    """Per-utterance H/S/D/I of normalised texts, from one jiwer alignment of the whole list."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    refs, hyps = _prepare(refs, metric), _prepare(hyps, metric)
    out = [ErrorCounts() for _ in refs]
    # jiwer needs at least one reference unit in a call; align the others by hand (pure insertions).
    idx = [i for i, r in enumerate(refs) if r]
    for i, h in enumerate(hyps):
        if not refs[i]:
            out[i].insertions = len(h.split()) if metric == "wer" else len(h)
    if not idx:
        return out
    jiwer = _jiwer()
    proc = jiwer.process_words if metric == "wer" else jiwer.process_characters
    res = proc([refs[i] for i in idx], [hyps[i] for i in idx])
    for i, chunks in zip(idx, res.alignments):
        c = out[i]
        for ch in chunks:
            n_ref, n_hyp = ch.ref_end_idx - ch.ref_start_idx, ch.hyp_end_idx - ch.hyp_start_idx
            if ch.type == "equal":
                c.hits += n_ref
            elif ch.type == "substitute":
                c.substitutions += n_ref
            elif ch.type == "delete":
                c.deletions += n_ref
            elif ch.type == "insert":
                c.insertions += n_hyp
            else:  # pragma: no cover - jiwer's alignment types are fixed
                raise ValueError(f"unexpected jiwer alignment type {ch.type!r}")
    # Cross-check against jiwer's own totals (guards against a jiwer API change).
    tot = sum((out[i] for i in idx), ErrorCounts())
    if (tot.hits, tot.substitutions, tot.deletions, tot.insertions) != (
            res.hits, res.substitutions, res.deletions, res.insertions):
        raise RuntimeError("per-utterance counts disagree with jiwer's totals")
    return out


def corpus_counts(per_utt: list[ErrorCounts], empty_references: str = "skip") -> ErrorCounts:
    """Micro totals over utterances; see the module doc for ``empty_references``."""
    if empty_references not in ("skip", "count"):
        raise ValueError(f"empty_references must be 'skip' or 'count', got {empty_references!r}")
    return sum((c for c in per_utt if c.ref_units or empty_references == "count"), ErrorCounts())


def error_rate(refs: list[str], hyps: list[str], metric: str = "wer", empty_references: str = "skip") -> float:
    """Corpus-level WER or CER of normalised texts (a float; NaN when no reference unit)."""
    return corpus_counts(utterance_counts(refs, hyps, metric), empty_references).rate


def cer(ref: str, hyp: str) -> float:
    """Character error rate of one pair, counted as `error_rate(..., "cer")` counts a corpus
    (whitespace removed). An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise
    (the rate is undefined there; 1.0 = everything wrong), so a per-clip comparison always has a number."""
    counts = utterance_counts([ref or ""], [hyp or ""], "cer")[0]
    if not counts.ref_units:
        return 0.0 if not counts.insertions else 1.0
    return counts.rate
