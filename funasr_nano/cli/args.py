"""Argument types and the option groups the transcribing commands share."""

from __future__ import annotations

import argparse
import sys

from .errors import EXIT_USAGE

DEFAULT_MODEL = "FunAudioLLM/Fun-ASR-Nano-2512"
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message and exits 2; keep that, one line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}")
    return v


def _segment_seconds(s: str) -> float:
    v = _positive_float(s)
    if v > 30.0:
        raise argparse.ArgumentTypeError(f"segments are at most 30 s (the model's training length), got {s}")
    return v


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", "-m", default=None,
                   help="checkpoint directory in any published form (official: config.yaml, model.pt, "
                        "Qwen3-0.6B/; Transformers -hf; mlx-audio / mlx-community, also -8bit/-4bit), "
                        "or a Hugging Face repo id "
                        f"(default: $FUNASR_NANO_MODEL or {DEFAULT_MODEL})")
    g.add_argument("--synthetic", action="store_true",
                   help="use seeded random weights of the real model's shapes (written once to "
                        "$FUNASR_NANO_CACHE or ~/.cache/funasr_nano); outputs are labelled as synthetic")
    g.add_argument("--synthetic-size", choices=("real", "tiny"), default="real", help=argparse.SUPPRESS)
    g.add_argument("--preset", default=None,
                   help="precision preset (e.g. fp32, bf16, q4; see funasr_nano.precision.PRESETS)")
    g.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)


def _add_decode_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--language", "-l", default=None,
                   help="language hint: 'auto' (default: none in the prompt), a code (zh, en, ja, ko, yue) "
                        "or one of the model's language names (e.g. 中文)")
    g.add_argument("--hotwords", action="append", default=None, metavar="WORDS",
                   help="comma-separated hotwords (repeatable)")
    g.add_argument("--no-itn", action="store_true", help="ask for text without inverse text normalisation")
    g.add_argument("--max-new-tokens", type=_positive_int, default=512, metavar="N",
                   help="most tokens decoded per segment (default 512)")
    g.add_argument("--no-repetition-guard", dest="repetition_guard", action="store_false",
                   help="do not stop rows caught in a decoding loop (the reference has no guard)")
    g.add_argument("--max-segment-seconds", type=_segment_seconds, default=30.0, metavar="S",
                   help="longest segment long audio is split into (<= 30, default 30)")


