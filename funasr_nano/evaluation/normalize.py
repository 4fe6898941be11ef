"""Text normalisation before scoring, as the field does it.

* ``whisper_english``: OpenAI Whisper's ``EnglishTextNormalizer`` (lower-case, bracketed spans and
  fillers dropped, contractions and titles expanded, spelled numbers -> digits, British -> American
  spelling, punctuation removed), from the PyPI package ``whisper-normalizer`` (a verbatim copy of
  Whisper's code and spelling table), not rewritten here. The Open ASR Leaderboard applies the same
  normaliser to references and predictions; its own copy adds a few name/acronym/compound-word rules, so
  numbers can differ from the leaderboard's in the second decimal.
* ``whisper_basic``: Whisper's language-neutral ``BasicTextNormalizer`` (same package).
* ``mandarin``: FunASR's canonical CER normalisation (``normalize_zh`` in Fun-ASR's
  ``benchmarks/compute_cer.py``: drop ``<|...|>`` tags, keep only word characters and CJK ideographs,
  upper-case) with NFKC first, so full-width letters, digits and punctuation become half-width, and all
  whitespace removed (AISHELL references are word-segmented with spaces). No Traditional -> Simplified
  and no number conversion: AISHELL is run with ITN off instead (see ``datasets_cfg/aishell1-test.yaml``).
* ``none``: whitespace collapsed only.

Every normaliser maps a string to a string; `tokens_for_metric` then splits it into the units the metric
counts (words for WER, characters without spaces for CER).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_TAGS = re.compile(r"<\|[^|>]*\|>")
_NOT_WORD_OR_CJK = re.compile(r"[^\w\u4e00-\u9fff]+")
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=None)
def _whisper_english():
    try:
        from whisper_normalizer.english import EnglishTextNormalizer
    except ImportError as e:
        raise ImportError("the 'whisper_english' normaliser needs the whisper-normalizer package: "
                          "pip install 'funasr-nano-mlx[eval]' (or pip install whisper-normalizer)") from e
    return EnglishTextNormalizer()


@lru_cache(maxsize=None)
def _whisper_basic():
    try:
        from whisper_normalizer.basic import BasicTextNormalizer
    except ImportError as e:
        raise ImportError("the 'whisper_basic' normaliser needs the whisper-normalizer package: "
                          "pip install 'funasr-nano-mlx[eval]' (or pip install whisper-normalizer)") from e
    return BasicTextNormalizer()


def whisper_english(text: str) -> str:
    return _whisper_english()(text or "").strip()


def whisper_basic(text: str) -> str:
    return _SPACES.sub(" ", _whisper_basic()(text or "")).strip()


def mandarin(text: str) -> str:
    """FunASR ``normalize_zh`` + NFKC + whitespace removal: one string of scoring characters."""
    t = _TAGS.sub("", text or "")
    t = unicodedata.normalize("NFKC", t)
    t = _NOT_WORD_OR_CJK.sub("", t)  # removes punctuation, symbols and whitespace
    return t.upper()


def none(text: str) -> str:
    return _SPACES.sub(" ", text or "").strip()


NORMALIZERS = {
    "whisper_english": whisper_english,
    "whisper_basic": whisper_basic,
    "mandarin": mandarin,
    "none": none,
}

DESCRIPTIONS = {
    "whisper_english": "Whisper EnglishTextNormalizer (PyPI whisper-normalizer) on reference and hypothesis",
    "whisper_basic": "Whisper BasicTextNormalizer (PyPI whisper-normalizer) on reference and hypothesis",
    "mandarin": "FunASR normalize_zh (drop <|tags|>, keep \\w and CJK, upper-case) after NFKC "
                "(full-width -> half-width); all whitespace and punctuation removed",
    "none": "whitespace collapsed only",
}


def get_normalizer(name: str):
    try:
        return NORMALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown normaliser {name!r}; choose one of {sorted(NORMALIZERS)}") from None


def normalizer_info(name: str) -> dict:
    """What a result records about the normaliser (name, description, package version)."""
    info = {"name": name, "description": DESCRIPTIONS.get(name, "")}
    if name.startswith("whisper"):
        try:
            from importlib.metadata import version

            info["package"] = f"whisper-normalizer {version('whisper-normalizer')}"
        except Exception:  # pragma: no cover - metadata missing
            info["package"] = "whisper-normalizer (version unknown)"
    return info


def tokens_for_metric(normalized: str, metric: str) -> list[str]:
    """Scoring units: whitespace-separated words (WER) or characters with whitespace removed (CER)."""
    if metric == "wer":
        return normalized.split()
    if metric == "cer":
        return [c for c in normalized if not c.isspace()]
    raise ValueError(f"unknown metric {metric!r}; choose 'wer' or 'cer'")
