"""Choosing, validating and loading the model a command runs."""

from __future__ import annotations

import os
import sys
import time

from ..synthetic import ensure_synthetic
from .args import DEFAULT_MODEL
from .errors import EXIT_MODEL, EXIT_USAGE, PROG, CLIError, _debug_env, _note


def check_preset(preset):
    """Validate a precision preset name early (exit 2 on an unknown one)."""
    if preset is None:
        return None
    from ..precision.plan import PRESETS, parse_preset

    try:
        parse_preset(preset)
    except (ValueError, KeyError) as e:
        known = f"; presets: {', '.join(PRESETS)} (see funasr_nano.precision.plan for the grammar)"
        msg = _one_line(e).rstrip(".")
        if repr(preset) not in msg:
            msg = f"unknown preset {preset!r}: {msg}"
        raise CLIError(EXIT_USAGE, f"{msg}{known}") from None
    return preset


def check_language(language):
    from ..model.prompt import resolve_language

    try:
        return resolve_language(language)
    except ValueError as e:
        raise CLIError(EXIT_USAGE, str(e)) from None


def _one_line(e: BaseException) -> str:
    """The first line of an exception's message."""
    s = str(e.args[0]) if isinstance(e, KeyError) and len(e.args) == 1 else str(e)
    s = s.strip().splitlines()[0].strip() if s.strip() else ""
    return s or type(e).__name__


def model_source(args) -> str:
    if args.synthetic:
        if args.model:
            raise CLIError(EXIT_USAGE, "--synthetic and --model are mutually exclusive")
        try:
            return str(ensure_synthetic(args.synthetic_size, progress=_note))
        except OSError as e:
            raise CLIError(EXIT_MODEL, f"cannot write the synthetic checkpoint: {e}") from e
    return args.model or os.environ.get("FUNASR_NANO_MODEL") or DEFAULT_MODEL


def load_model(args):
    """(asr, seconds). Raises CLIError(EXIT_MODEL/EXIT_USAGE) with one clear message."""
    import funasr_nano

    from ..checkpoint import CheckpointError
    from ..model.config import ConfigError

    preset = check_preset(args.preset)
    src = model_source(args)
    t0 = time.perf_counter()
    try:
        asr = funasr_nano.load(src, preset=preset)
    except (CheckpointError, ConfigError) as e:
        raise CLIError(EXIT_MODEL, f"cannot load model {src}: {e}") from e
    except FileNotFoundError as e:
        raise CLIError(EXIT_MODEL, f"cannot load model {src}: incomplete checkpoint directory: {e}") from e
    except ValueError as e:
        if preset is not None and "preset" in str(e).lower():
            raise CLIError(EXIT_USAGE, f"unknown preset {preset!r}: {e}") from None
        raise CLIError(EXIT_MODEL, f"cannot load model {src}: {e}") from e
    except (OSError, ImportError) as e:
        raise CLIError(EXIT_MODEL, f"cannot load model {src}: {type(e).__name__}: {e}") from e
    except MemoryError as e:
        raise CLIError(EXIT_MODEL, f"cannot load model {src}: out of memory") from e
    except Exception as e:  # yaml/json parse errors and the like: still a model problem
        if _debug_env() or getattr(args, "debug", False):
            raise
        raise CLIError(EXIT_MODEL, f"cannot load model {src}: {type(e).__name__}: {' '.join(str(e).split())}") from e
    return asr, time.perf_counter() - t0


def synthetic_banner(asr) -> None:
    if asr.synthetic:
        from ..io.formats import SYNTHETIC_NOTE

        print(f"{PROG}: NOTE: {SYNTHETIC_NOTE}", file=sys.stderr, flush=True)


def repetition_guard(args):
    if not args.repetition_guard or getattr(args, "ignore_eos", False):
        return None
    return True


def _hotwords(values):
    if not values:
        return None
    words = [w.strip() for v in values for w in v.split(",")]
    return [w for w in words if w] or None


