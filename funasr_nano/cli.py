"""The ``funasr-nano`` command line.

Subcommands
-----------
``transcribe FILES...``  files, folders (searched recursively for audio) and globs; text, JSON,
                         SRT or VTT output; long audio split into <= 30 s segments; many files
                         sorted by duration and batched by seconds of audio; ``--stream``.
``profile FILE``         one transcription with a per-stage table (load, frontend, encoder,
                         adaptor, prefill, decode ms and tokens/s, peak memory).
``eval`` / ``bench`` / ``report`` / ``machine``
                         mount points for the evaluation and benchmark tools (imported lazily).

Exit codes
----------
==  =====================================================================================
0   success: every input transcribed
1   some inputs failed (unreadable/corrupt/empty audio, missing file, ...); the others'
    results are still written; each failure is one ``error:`` line on stderr naming the file
2   usage error: bad option or value, unknown preset or language, conflicting options
3   model error: missing or incomplete checkpoint directory, bad config, weights whose
    shapes do not fit, download failure
4   a subcommand's module or optional dependency is not installed
5   unexpected internal error (one line; ``--debug`` or ``FUNASR_NANO_DEBUG=1`` shows the traceback)
130 interrupted (Ctrl-C)
==  =====================================================================================

The model is only loaded once at least one input has been found readable, so a run whose every
input is bad exits 1 without touching the model.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import time
import traceback
from pathlib import Path

EXIT_OK = 0
EXIT_FILES = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERNAL = 5
EXIT_INTERRUPTED = 130

DEFAULT_MODEL = "FunAudioLLM/Fun-ASR-Nano-2512"
SYNTHETIC_SEED = 0
PROG = "funasr-nano"
_WS = re.compile(r"\s+")

# Subcommands provided by other modules: name -> (module, help). `eval` uses the
# add_arguments/run protocol; the others take the remaining argv.
MOUNTED = {
    "eval": ("funasr_nano.evaluation.cli", "evaluate WER/CER on a dataset (see `eval --help`)"),
    "bench": ("funasr_nano.bench.quick", "quick benchmark of this machine and model"),
    "report": ("funasr_nano.bench.report", "render benchmark results into a report"),
    "machine": ("funasr_nano.bench.machine", "describe this machine (for benchmark records)"),
}


class CLIError(Exception):
    """An expected failure: printed as one ``error:`` line, mapped to an exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _debug_env() -> bool:
    return os.environ.get("FUNASR_NANO_DEBUG", "") not in ("", "0")


def _err(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr, flush=True)


def _warn(msg: str) -> None:
    print(f"{PROG}: warning: {msg}", file=sys.stderr, flush=True)


def _note(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# argument parsing
# ------------------------------------------------------------------------------------------


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Fun-ASR-Nano-2512 speech recognition in MLX.",
                     epilog="Exit codes: 0 ok, 1 some inputs failed, 2 usage error (incl. unknown preset/"
                            "language), 3 model error, 4 subcommand not installed, 5 internal error.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("transcribe", help="transcribe audio files, folders or globs",
                       description="Transcribe audio files (wav, flac, ogg, mp3, ...; any sample rate "
                                   "and channel count).")
    t.add_argument("files", nargs="+", metavar="FILE", help="audio files, folders or glob patterns")
    _add_model_args(t)
    _add_decode_args(t)
    g = t.add_argument_group("batching")
    g.add_argument("--batch-size", type=_positive_int, default=16, metavar="N",
                   help="most segments decoded together (default 16; 1 disables batching)")
    g.add_argument("--batch-seconds", type=_positive_float, default=300.0, metavar="S",
                   help="most padded seconds of audio per batch (the reference's batch_size_s; default 300)")
    g = t.add_argument_group("output")
    g.add_argument("--format", "-f", choices=("text", "json", "srt", "vtt"), default="text",
                   help="output format (default text)")
    g.add_argument("--output", "-o", default=None, metavar="PATH", help="write the output to PATH instead of stdout")
    g.add_argument("--output-dir", default=None, metavar="DIR",
                   help="write one output file per input into DIR (<name>.txt/.json/.srt/.vtt)")
    g.add_argument("--stream", action="store_true", help="print text as it is decoded (text format only)")
    prog = g.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show a progress bar (default: when stderr is a terminal and there are several files)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")

    p = sub.add_parser("profile", help="time one transcription stage by stage",
                       description="Transcribe one file and print per-stage times, tokens/s and peak memory.")
    p.add_argument("file", metavar="FILE")
    _add_model_args(p)
    _add_decode_args(p)
    p.add_argument("--ignore-eos", action="store_true",
                   help="decode exactly --max-new-tokens tokens (turns the repetition guard off)")
    p.add_argument("--warmup", type=int, default=0, metavar="N", help="untimed transcriptions first (default 0)")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")

    for name, (_, help_) in MOUNTED.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


# ------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------


def synthetic_dir(size: str = "real", seed: int = SYNTHETIC_SEED) -> Path:
    from .checkpoint import default_cache_root

    return default_cache_root() / f"synthetic-{size}-seed{seed}"


def ensure_synthetic(size: str = "real", seed: int = SYNTHETIC_SEED) -> Path:
    """The synthetic checkpoint in the cache, written on first use (atomically: tmp dir + rename)."""
    from .synthetic import is_synthetic, write_synthetic_checkpoint

    d = synthetic_dir(size, seed)
    if is_synthetic(d) and (d / "model.pt").is_file() and (d / "config.yaml").is_file():
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = d.parent / f".{d.name}.tmp-{os.getpid()}"
    _note(f"writing the {size} synthetic checkpoint to {d} (one-time) ...")
    t0 = time.perf_counter()
    try:
        write_synthetic_checkpoint(tmp, preset=size, seed=seed)
        if d.exists():  # an incomplete leftover (or a concurrent writer finished first)
            if is_synthetic(d) and (d / "model.pt").is_file():
                import shutil
                shutil.rmtree(tmp, ignore_errors=True)
                return d
            import shutil
            shutil.rmtree(d)
        os.replace(tmp, d)
    except BaseException:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _note(f"synthetic checkpoint written in {time.perf_counter() - t0:.1f} s")
    return d


def check_preset(preset):
    """Validate a precision preset name early (exit 2 on an unknown one)."""
    if preset is None:
        return None
    try:
        from .precision import parse_preset
    except ImportError:  # presets not available in this build: plain dtype names only
        from .pipeline import DTYPES

        if str(preset).lower() not in DTYPES:
            raise CLIError(EXIT_USAGE, f"unknown preset {preset!r}; choose one of {sorted(set(DTYPES))}") from None
        return preset
    try:
        parse_preset(preset)
    except (ValueError, KeyError) as e:
        try:
            from .precision import PRESETS
            known = f"; presets: {', '.join(PRESETS)} (see funasr_nano.precision for the grammar)"
        except ImportError:
            known = ""
        msg = _one_line(e).rstrip(".")
        if repr(preset) not in msg:
            msg = f"unknown preset {preset!r}: {msg}"
        raise CLIError(EXIT_USAGE, f"{msg}{known}") from None
    return preset


def check_language(language):
    from .prompt import resolve_language

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
            return str(ensure_synthetic(args.synthetic_size))
        except OSError as e:
            raise CLIError(EXIT_MODEL, f"cannot write the synthetic checkpoint: {e}") from e
    return args.model or os.environ.get("FUNASR_NANO_MODEL") or DEFAULT_MODEL


def load_model(args):
    """(asr, seconds). Raises CLIError(EXIT_MODEL/EXIT_USAGE) with one clear message."""
    import funasr_nano
    from .checkpoint import CheckpointError
    from .config import ConfigError

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
    asr.preset = getattr(asr, "preset", None) or preset
    return asr, time.perf_counter() - t0


def synthetic_banner(asr) -> None:
    if getattr(asr, "synthetic", False):
        from .formats import SYNTHETIC_NOTE

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


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------


def expand_inputs(specs) -> tuple[list[str], list]:
    """Files, folders (recursive, audio extensions) and globs -> (files, FileResults for bad specs)."""
    from .audio import AUDIO_EXTENSIONS
    from .formats import FileResult

    files: list[str] = []
    bad: list = []

    def audio_in(folder: Path) -> list[str]:
        return sorted(str(f) for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)

    for spec in specs:
        p = Path(spec).expanduser()
        if p.is_dir():
            found = audio_in(p)
            if not found:
                bad.append(FileResult(spec, error=f"{spec}: folder holds no audio files "
                                                  f"({', '.join(AUDIO_EXTENSIONS[:5])}, ...)"))
            files.extend(found)
        elif p.exists() or os.path.lexists(p):
            files.append(str(p) if spec.startswith("~") else spec)
        elif glob.has_magic(spec):
            matches = sorted(glob.glob(os.path.expanduser(spec), recursive=True))
            found = []
            for m in matches:
                mp = Path(m)
                found.extend(audio_in(mp) if mp.is_dir() else [m])
            if not found:
                bad.append(FileResult(spec, error=f"{spec}: no files match"))
            files.extend(found)
        else:
            bad.append(FileResult(spec, error=f"{spec}: no such file"))
    seen, unique = set(), []
    for f in files:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, bad


def _file_error(path: str, e: BaseException) -> str:
    from .audio import AudioError

    if isinstance(e, MemoryError):
        msg = "out of memory"
    elif isinstance(e, (AudioError, ValueError)):
        msg = str(e)
    else:
        msg = f"{type(e).__name__}: {e}"
    msg = " ".join(msg.split()) if "\n" not in msg else msg
    for prefix in (f"{path}: ", "audio array: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    msg = re.sub(r"^clip \d+: ", "", msg)
    return f"{path}: {msg}"


# ------------------------------------------------------------------------------------------
# progress
# ------------------------------------------------------------------------------------------


class Progress:
    def __init__(self, total: int, total_seconds: float, enabled: bool, stream=None):
        self.total, self.total_seconds, self.enabled = total, total_seconds, enabled
        self.stream = stream or sys.stderr
        self.done, self.seconds = 0, 0.0
        self.t0 = time.perf_counter()
        if enabled:
            self._draw()

    def update(self, files: int, seconds: float) -> None:
        self.done += files
        self.seconds += seconds
        if self.enabled:
            self._draw()

    def _draw(self) -> None:
        width = 24
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        wall = time.perf_counter() - self.t0
        speed = f"{self.seconds / wall:6.1f}x realtime" if wall > 0 and self.seconds else ""
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} files  {self.seconds:8.1f}/"
                          f"{self.total_seconds:.1f} s audio  {speed}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# ------------------------------------------------------------------------------------------
# transcription of many files
# ------------------------------------------------------------------------------------------


def _decode_opts(args, language):
    return dict(language=language, hotwords=_hotwords(args.hotwords), itn=not args.no_itn,
                max_new_tokens=args.max_new_tokens, repetition_guard=repetition_guard(args))


def _segments_of(wav, fs, max_seconds):
    from .segment import split_audio

    return split_audio(wav, fs, max_seconds=max_seconds, drop_silent=True)


def _finish_file(r, trs, segs, long_audio: bool) -> None:
    """Fill a FileResult from its segments' Transcriptions."""
    from .formats import SegmentResult
    from .segment import join_texts

    for seg, tr in zip(segs, trs):
        r.segments.append(SegmentResult(seg.start_s, seg.end_s, tr.text, tr.stop_reason, len(tr.tokens)))
    if not long_audio and len(trs) == 1:
        r.text, r.text_tn = trs[0].text, trs[0].text_tn  # exactly the model's output
    else:
        r.text = join_texts(t.text for t in trs)
        r.text_tn = join_texts(t.text_tn for t in trs)


def _share_timings(r, tr, seg_seconds: float) -> None:
    from .pipeline import STAGES

    batch_audio = getattr(tr, "batch_audio_seconds", 0.0) or tr.audio_seconds or 1.0
    share = seg_seconds / batch_audio if batch_audio else 1.0
    for k in STAGES:
        if k in tr.timings:
            r.timings[k] = r.timings.get(k, 0.0) + tr.timings[k] * share
    r.batch_sizes.append(getattr(tr, "batch_size", 1))


def run_batch(asr, wavs, opts):
    """Transcribe a batch; if the batch as a whole fails, retry row by row.
    Returns a list of Transcription or Exception per row."""
    try:
        if len(wavs) == 1:
            return [asr.transcribe(wavs[0], **opts)]
        return list(asr.transcribe_batch(wavs, **opts))
    except KeyboardInterrupt:
        raise
    except Exception as e:
        if len(wavs) == 1:
            return [e]
    out = []
    for w in wavs:
        try:
            out.append(asr.transcribe(w, **opts))
        except KeyboardInterrupt:
            raise
        except Exception as e:
            out.append(e)
    return out


def transcribe_files(asr, files, durations, args, language, on_file_done=None):
    """FileResults in the order of `files` (which must all have probed durations)."""
    from .batching import chunk_by_seconds, plan_batches
    from .formats import FileResult

    fs = asr.cfg.frontend.fs
    opts = _decode_opts(args, language)
    results = [FileResult(f, duration=d) for f, d in zip(files, durations)]
    order = sorted(range(len(files)), key=lambda i: (-durations[i], i))
    chunk_s = max(args.batch_seconds * 4, 1200.0)
    for chunk in chunk_by_seconds([durations[i] for i in order], chunk_s):
        idx = [order[j] for j in chunk]
        items = []  # (file index, segment, samples)
        segs_of: dict[int, list] = {}
        for i in idx:
            try:
                wav = asr.load_audio(files[i])
            except KeyboardInterrupt:
                raise
            except Exception as e:
                results[i].error = _file_error(files[i], e)
                if on_file_done:
                    on_file_done(results[i])
                continue
            results[i].duration = wav.shape[0] / fs
            segs = _segments_of(wav, fs, args.max_segment_seconds)
            segs_of[i] = segs
            for s in segs:
                items.append((i, s, s.slice(wav)))
            if not segs:  # long and silent throughout
                _finish_file(results[i], [], [], True)
                if on_file_done:
                    on_file_done(results[i])
        trs: dict[tuple, object] = {}
        remaining = {i: len(s) for i, s in segs_of.items() if s}
        batches = plan_batches([it[1].duration for it in items], args.batch_seconds, args.batch_size)
        for b in batches:
            rows = [items[k] for k in b]
            live = [r for r in rows if results[r[0]].error is None]
            outs = run_batch(asr, [r[2] for r in live], opts) if live else []
            for (i, seg, _), out in zip(live, outs):
                if isinstance(out, BaseException):
                    results[i].error = _file_error(files[i], out)
                else:
                    trs[(i, seg.start)] = out
                    _share_timings(results[i], out, seg.duration)
            for i, _, _ in rows:
                remaining[i] -= 1
                if remaining[i] == 0:
                    r = results[i]
                    if r.error is None:
                        segs = segs_of[i]
                        long_audio = len(segs) > 1 or (segs and segs[0].duration < r.duration - 1e-9)
                        _finish_file(r, [trs[(i, s.start)] for s in segs], segs, bool(long_audio))
                    if on_file_done:
                        on_file_done(r)
        del items
    return results


def stream_files(asr, files, args, language, out) -> list:
    """--stream: files one at a time, segments in order, text printed as it decodes."""
    from .formats import FileResult
    from .segment import _is_cjk

    fs = asr.cfg.frontend.fs
    opts = _decode_opts(args, language)
    results = []
    for f in files:
        r = FileResult(f)
        results.append(r)
        try:
            wav = asr.load_audio(f)
        except Exception as e:
            r.error = _file_error(f, e)
            _err(r.error)
            continue
        r.duration = wav.shape[0] / fs
        segs = _segments_of(wav, fs, args.max_segment_seconds)
        if len(files) > 1:
            out.write(f"{f}\t")
        printed, trs = "", []
        try:
            for si, seg in enumerate(segs):
                gen = asr.stream(seg.slice(wav), **opts)
                first = True
                while True:
                    try:
                        piece = next(gen)
                    except StopIteration as done:
                        trs.append(done.value)
                        break
                    piece = _WS.sub(" ", piece)  # as the final text does
                    if si > 0 and first:
                        piece = piece.lstrip()
                        if not piece:
                            continue
                        if printed and not printed.endswith(" ") and not (
                                _is_cjk(printed[-1]) and _is_cjk(piece[0])):
                            piece = " " + piece
                    elif printed.endswith(" ") and piece.startswith(" "):
                        piece = piece[1:]
                    if not piece:
                        continue
                    first = False
                    out.write(piece)
                    out.flush()
                    printed += piece
        except KeyboardInterrupt:
            raise
        except Exception as e:
            r.error = _file_error(f, e)
            out.write("\n")
            _err(r.error)
            continue
        out.write("\n")
        out.flush()
        long_audio = len(segs) > 1 or (segs and segs[0].duration < r.duration - 1e-9)
        _finish_file(r, trs, segs, bool(long_audio))
        for tr, seg in zip(trs, segs):
            _share_timings(r, tr, seg.duration)
    return results


def _report_file_warnings(r, max_new_tokens: int) -> None:
    """One warning line per file and stop reason that deserves one."""
    if not r.ok:
        return
    many = len(r.segments) > 1
    for reason, what in (("repetition", "decoding stopped by the repetition guard (a token or n-gram "
                                        "kept repeating; the repeats were dropped)"),
                         ("max_new_tokens", f"reached --max-new-tokens {max_new_tokens}; the text may be cut short")):
        hit = [s for s in r.segments if s.stop_reason == reason]
        if not hit:
            continue
        where = ""
        if many:
            spans = ", ".join(f"{s.start:.1f}-{s.end:.1f} s" for s in hit[:6]) + (", ..." if len(hit) > 6 else "")
            where = f" ({len(hit)} of {len(r.segments)} segments: {spans})"
        _warn(f"{r.path}{where}: {what}")


def _unique_out_path(out_dir: Path, path: str, ext: str, used: set) -> Path:
    stem = Path(path).stem or "audio"
    cand = out_dir / f"{stem}{ext}"
    n = 2
    while cand in used:
        cand = out_dir / f"{stem}-{n}{ext}"
        n += 1
    used.add(cand)
    return cand


def cmd_transcribe(args) -> int:
    from . import formats
    from .audio import audio_duration

    language = check_language(args.language)
    if args.stream and args.format != "text":
        raise CLIError(EXIT_USAGE, "--stream prints text as it decodes; it needs --format text")
    if args.output and args.output_dir:
        raise CLIError(EXIT_USAGE, "--output and --output-dir are mutually exclusive")
    if args.synthetic and args.model:
        raise CLIError(EXIT_USAGE, "--synthetic and --model are mutually exclusive")
    check_preset(args.preset)

    files, bad = expand_inputs(args.files)
    if args.format in ("srt", "vtt") and len(files) > 1 and not args.output_dir:
        raise CLIError(EXIT_USAGE, f"{args.format} output holds one file; {len(files)} inputs need --output-dir")

    # Probe durations from the headers: bad files fail here, cheaply, before the model loads.
    good, durations = [], []
    for f in files:
        try:
            durations.append(audio_duration(f))
            good.append(f)
        except Exception as e:
            bad.append(formats.FileResult(f, error=_file_error(f, e)))
    for r in bad:
        _err(r.error)

    results: list = []
    asr = None
    load_s = 0.0
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CLIError(EXIT_USAGE, f"cannot create --output-dir {out_dir}: {e.strerror or e}") from e
    if good:
        asr, load_s = load_model(args)
        synthetic_banner(asr)
    meta = {"model": getattr(asr, "source", None), "preset": getattr(asr, "preset", None),
            "language": language, "load_seconds": round(load_s, 3)}
    synthetic = bool(getattr(asr, "synthetic", False))

    written: set = set()

    def write_one(r):
        if out_dir is not None and r.ok:
            path = _unique_out_path(out_dir, r.path, formats.EXTENSIONS[args.format], written)
            try:
                path.write_text(formats.render_one(r, args.format, meta, synthetic), encoding="utf-8")
            except OSError as e:
                r.error = f"{r.path}: cannot write {path}: {e.strerror or e}"
                _err(r.error)

    def emit_file(r):
        if r.ok:
            _report_file_warnings(r, args.max_new_tokens)
        else:
            _err(r.error)
        write_one(r)

    if good and args.stream:
        out = _open_output(args.output)
        try:
            results = stream_files(asr, good, args, language, out)
        finally:
            if out is not sys.stdout:
                out.close()
        for r in results:  # --stream printed the text (and errors) already
            if r.ok:
                _report_file_warnings(r, args.max_new_tokens)
            write_one(r)
    elif good:
        show = args.progress if args.progress is not None else (len(good) > 1 and sys.stderr.isatty())
        progress = Progress(len(good), sum(durations), bool(show))

        def done(r):
            if show and not r.ok:
                sys.stderr.write("\n")
            emit_file(r)
            progress.update(1, r.duration if r.ok else 0.0)

        try:
            results = transcribe_files(asr, good, durations, args, language, on_file_done=done)
        finally:
            progress.close()

    # Outputs: every input in the order given (bad specs included in JSON as errors).
    by_path = {r.path: r for r in results}
    ordered = [by_path[f] for f in good if f in by_path]
    everything = ordered + bad
    if not args.stream and out_dir is None:
        try:
            doc = formats.render(everything if args.format == "json" else ordered, args.format, meta, synthetic)
        except ValueError as e:
            raise CLIError(EXIT_USAGE, str(e)) from e
        _write_output(args.output, doc)
    n_failed = sum(1 for r in everything if not r.ok)
    if n_failed and len(everything) > 1:
        _note(f"{n_failed} of {len(everything)} inputs failed")
    return EXIT_FILES if n_failed else EXIT_OK


def _open_output(path):
    if not path or path == "-":
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as e:
        raise CLIError(EXIT_USAGE, f"cannot write --output {path}: {e.strerror or e}") from e


def _write_output(path, text: str) -> None:
    if not path or path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise CLIError(EXIT_FILES, f"cannot write --output {path}: {e.strerror or e}") from e


# ------------------------------------------------------------------------------------------
# profile
# ------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def cmd_profile(args) -> int:
    import json

    import mlx.core as mx

    from .audio import audio_duration
    from .pipeline import STAGES

    language = check_language(args.language)
    check_preset(args.preset)
    if args.warmup < 0:
        raise CLIError(EXIT_USAGE, f"--warmup must be >= 0, got {args.warmup}")
    try:
        audio_duration(args.file)
    except Exception as e:
        raise CLIError(EXIT_FILES, _file_error(args.file, e)) from None

    mx.reset_peak_memory()
    asr, load_s = load_model(args)
    load_peak = mx.get_peak_memory()
    synthetic_banner(asr)
    try:
        wav = asr.load_audio(args.file)
    except Exception as e:
        raise CLIError(EXIT_FILES, _file_error(args.file, e)) from None
    fs = asr.cfg.frontend.fs
    segs = _segments_of(wav, fs, args.max_segment_seconds)
    if not segs:
        raise CLIError(EXIT_FILES, f"{args.file}: silent throughout; nothing to transcribe")
    pieces = [s.slice(wav) for s in segs]
    opts = _decode_opts(args, language)
    opts["ignore_eos"] = args.ignore_eos

    def once():
        if len(pieces) == 1:
            return [asr.transcribe(pieces[0], **opts)]
        return asr.transcribe_batch(pieces, **opts)

    try:
        for _ in range(args.warmup):
            once()
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        trs = once()
        wall = time.perf_counter() - t0
    except KeyboardInterrupt:
        raise
    except Exception as e:
        raise CLIError(EXIT_FILES, _file_error(args.file, e)) from None
    run_peak = mx.get_peak_memory()

    tr = trs[0]
    t = tr.timings
    n_tok = sum(len(x.tokens) for x in trs)
    steps = getattr(tr, "decode_steps", None)
    if steps is None:  # older pipeline: one step per kept token after the first
        steps = max(0, max(len(x.tokens) for x in trs) - 1)
    n_prompt = sum(x.prompt_tokens for x in trs)
    audio_s = wav.shape[0] / fs
    rows = [("load", load_s, "")]
    for k in STAGES:
        if k not in t:
            continue
        extra = ""
        if k == "prefill" and t[k] > 0:
            extra = f"{n_prompt} prompt tokens, {n_prompt / t[k]:.1f} tok/s"
        elif k == "decode" and t[k] > 0:
            extra = f"{steps} steps, {steps / t[k]:.1f} tok/s, {1000 * t[k] / max(steps, 1):.1f} ms/step"
            if len(trs) > 1:
                extra += f" (batch of {len(trs)})"
        elif k == "encoder":
            extra = f"{audio_s / t[k]:.2f}x realtime" if t[k] > 0 else ""
        rows.append((k, t[k], extra))
    compute = sum(t.get(k, 0.0) for k in STAGES)
    text = " ".join(x.text for x in trs) if len(trs) > 1 else tr.text
    prof = {
        "file": args.file,
        "model": asr.source,
        "synthetic_weights": bool(asr.synthetic),
        "preset": asr.preset,
        "dtype": str(asr.dtype).rsplit(".", 1)[-1],
        "policy": asr.policy.to_dict(),
        "audio_seconds": round(audio_s, 3),
        "segments": len(pieces),
        "stages_ms": {name: round(1000 * s, 3) for name, s, _ in rows},
        "total_ms": round(1000 * compute, 3),
        "wall_ms": round(1000 * wall, 3),
        "rtf": round(compute / audio_s, 4) if audio_s else None,
        "prompt_tokens": n_prompt,
        "decode_tokens": n_tok,
        "decode_steps": steps,
        "decode_tokens_per_s": round(steps / t["decode"], 2) if t.get("decode") else None,
        "stop_reasons": [x.stop_reason for x in trs],
        "peak_memory_mb": {"mlx_load": round(load_peak / 2**20, 1), "mlx_transcribe": round(run_peak / 2**20, 1),
                           "process_rss": (round(_peak_rss_mb(), 1) if _peak_rss_mb() else None)},
        "text": text,
    }
    if asr.synthetic:
        from .formats import SYNTHETIC_NOTE
        prof["note"] = SYNTHETIC_NOTE
    if args.json:
        print(json.dumps(prof, ensure_ascii=False, indent=2))
        return EXIT_OK
    head = f"{args.file}: {audio_s:.2f} s audio"
    if len(pieces) > 1:
        head += f" in {len(pieces)} segments (one batch)"
    head += f", model {asr.source}"
    if asr.synthetic:
        head += " [synthetic weights]"
    dt = prof["dtype"] + (f", preset {prof['preset']}" if prof["preset"] else "")
    print(f"{head} ({dt})")
    print(f"policy: {asr.policy.summary()}")
    print(f"{'stage':<12}{'ms':>11}  notes")
    for name, s, extra in rows:
        print(f"{name:<12}{1000 * s:>11.1f}  {extra}")
    print(f"{'total':<12}{1000 * compute:>11.1f}  excl. load; RTF {compute / audio_s:.3f}" if audio_s else "")
    mem = prof["peak_memory_mb"]
    rss = f", process peak RSS {mem['process_rss']:.0f} MiB" if mem["process_rss"] else ""
    print(f"peak memory: MLX {mem['mlx_transcribe']:.0f} MiB while transcribing, "
          f"{mem['mlx_load']:.0f} MiB while loading{rss}")
    shown = repr(text) if len(text) <= 200 else repr(text[:200]) + "..."
    print(f"output: {n_tok} token{'' if n_tok == 1 else 's'} (stop: {', '.join(prof['stop_reasons'])}): {shown}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------
# mounted subcommands
# ------------------------------------------------------------------------------------------


def _import_mounted(name: str):
    import importlib

    module = MOUNTED[name][0]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CLIError(EXIT_UNAVAILABLE, f"`{PROG} {name}` is not available: cannot import {module} ({e})") from e


def run_mounted(name: str, rest: list[str]) -> int:
    mod = _import_mounted(name)
    if name == "eval":
        if not (hasattr(mod, "add_arguments") and hasattr(mod, "run")):
            raise CLIError(EXIT_UNAVAILABLE, f"`{PROG} eval` is not available: {mod.__name__} lacks add_arguments/run")
        p = _Parser(prog=f"{PROG} eval", description=MOUNTED[name][1])
        mod.add_arguments(p)
        args = p.parse_args(rest)
        rc = mod.run(args)
    else:
        if not hasattr(mod, "main"):
            raise CLIError(EXIT_UNAVAILABLE, f"`{PROG} {name}` is not available: {mod.__name__} has no main()")
        rc = mod.main(rest)
    return int(rc or 0) if not isinstance(rc, bool) else int(not rc)


# ------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_env() or "--debug" in argv
    try:
        if argv and argv[0] in MOUNTED:
            return run_mounted(argv[0], argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        if args.command == "transcribe":
            return cmd_transcribe(args)
        if args.command == "profile":
            return cmd_profile(args)
        parser.error(f"unknown command {args.command!r}")
        return EXIT_USAGE
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        code = e.code
        if code is None:
            return EXIT_OK
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return EXIT_USAGE
    except CLIError as e:
        if debug and e.__cause__ is not None:
            traceback.print_exception(e.__cause__)
        _err(e.message)
        return e.code
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except Exception as e:  # a bug: one line, the traceback on request
        if debug:
            traceback.print_exc()
        _err(f"internal error: {type(e).__name__}: {e} (rerun with --debug or FUNASR_NANO_DEBUG=1 "
             "for the traceback)")
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
