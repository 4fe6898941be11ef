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
import os
import sys
import traceback

from .args import (
    _add_decode_args,
    _add_model_args,
    _Parser,
    _positive_float,
    _positive_int,
)
from .errors import (
    EXIT_FILES,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    PROG,
    CLIError,
    _debug_env,
    _err,
)
from .profile import cmd_profile
from .transcribe import cmd_transcribe

# Subcommands provided by other modules: name -> (module, help). `eval` uses the
# add_arguments/run protocol; the others take the remaining argv.
MOUNTED = {
    "eval": ("funasr_nano.evaluation.cli", "evaluate WER/CER on a dataset (see `eval --help`)"),
    "bench": ("funasr_nano.bench.quick", "quick benchmark of this machine and model"),
    "report": ("funasr_nano.bench.report", "render benchmark results into a report"),
    "machine": ("funasr_nano.bench.machine", "describe this machine (for benchmark records)"),
    "blas": ("funasr_nano.runtime.blas", "which BLAS MLX's Linux CPU backend uses; `blas build` builds the shim"),
}



def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Fun-ASR-Nano-2512 speech recognition in MLX.",
                     epilog="Exit codes: 0 ok, 1 some inputs failed, 2 usage error (incl. unknown preset/"
                            "language), 3 model error, 4 subcommand not installed, 5 internal error.")
    from .. import __version__

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


# The exit-code contract is part of the command line's interface (see the module docstring).
__all__ = ["main", "build_parser", "CLIError", "MOUNTED", "EXIT_OK", "EXIT_FILES", "EXIT_USAGE", "EXIT_MODEL",
           "EXIT_UNAVAILABLE", "EXIT_INTERNAL", "EXIT_INTERRUPTED"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
