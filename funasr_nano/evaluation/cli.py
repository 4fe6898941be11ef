"""``funasr-nano eval``: word / character error rate of a model on an evaluation set.

    funasr-nano eval --dataset librispeech-test-clean --preset q4 --limit 200
    python -m funasr_nano.evaluation.cli --dataset smoke --synthetic      # offline, no download

The top-level CLI mounts this module with `add_arguments` + `run`; `main` runs it standalone.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_MODEL = "FunAudioLLM/Fun-ASR-Nano-2512"
DEFAULT_OUTPUT_DIR = "eval_results"
EXIT_USAGE, EXIT_DATA, EXIT_MODEL = 2, 2, 3  # as the top-level CLI: 2 usage/data, 3 model


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="smoke",
                   help="evaluation set: a name from datasets_cfg/ (smoke, smoke-zh, librispeech-test-clean, "
                        "librispeech-test-other, aishell1-test) or a YAML file (default: smoke)")
    d.add_argument("--list-datasets", action="store_true", help="list the known sets and exit")
    d.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate N utterances only")
    d.add_argument("--subset", choices=("first", "spread"), default="first",
                   help="with --limit: the first N (default) or N spread evenly over the split (no streaming)")
    d.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=None,
                   help="stream rows instead of downloading/caching the split (default: the set's config; "
                        "'auto' streams hub sets when --limit is given)")
    d.add_argument("--data-path", default=None, metavar="DIR",
                   help="read the set from a local copy instead of the hub (hub snapshot, save_to_disk folder, "
                        "or audio files + metadata.csv)")
    d.add_argument("--data-files", nargs="+", default=None, metavar="FILE",
                   help="read the set from local parquet/arrow/jsonl/csv files instead of the hub")
    d.add_argument("--revision", default=None, help="hub dataset revision (overrides the config's)")

    m = p.add_argument_group("model")
    m.add_argument("--model", "-m", default=None,
                   help=f"checkpoint directory or Hugging Face repo id (default: $FUNASR_NANO_MODEL or "
                        f"{DEFAULT_MODEL})")
    m.add_argument("--synthetic", nargs="?", const="tiny", choices=("tiny", "real"), default=None,
                   help="use a seeded synthetic checkpoint instead of --model (shape 'tiny' by default, or "
                        "'real'); error rates are then meaningless")
    m.add_argument("--seed", type=int, default=0, help="seed of the synthetic checkpoint (default 0)")
    m.add_argument("--preset", default=None, help="precision / quantisation preset passed to funasr_nano.load")
    m.add_argument("--dtype", default=None, help="decoder dtype passed to funasr_nano.load")
    m.add_argument("--audio-dtype", default=None, help="encoder/adaptor dtype passed to funasr_nano.load")
    m.add_argument("--cache-dir", default=None, help="checkpoint cache folder")

    r = p.add_argument_group("run")
    r.add_argument("--batch-size", type=int, default=1, help="clips per model call (default 1)")
    r.add_argument("--max-new-tokens", type=int, default=None,
                   help="decode cap (default: 512 as the reference; synthetic weights: 12/s of audio + 24)")
    r.add_argument("--warmup", type=int, default=1, help="untimed warm-up calls before timing (default 1)")
    r.add_argument("--language", default=None, help="override the set's prompt language (en, zh, auto ...)")
    r.add_argument("--itn", action=argparse.BooleanOptionalAction, default=None,
                   help="override the set's ITN setting")
    r.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR,
                   help=f"where the result JSON and per-utterance JSONL go (default: ./{DEFAULT_OUTPUT_DIR})")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--json", action="store_true", help="print the result JSON on stdout")
    return p


def _synthetic_dir(shape: str, seed: int, cache_dir=None):
    """The seeded synthetic checkpoint ``<cache>/synthetic-<shape>-seed<seed>`` (the folder the
    top-level CLI's ``--synthetic`` uses), written once."""
    from ..synthetic import ensure_synthetic

    return ensure_synthetic(shape, seed, root=cache_dir,
                            progress=lambda msg: print(f"funasr-nano eval: {msg}", file=sys.stderr))


def load_model(args):
    import os

    import funasr_nano

    src = (_synthetic_dir(args.synthetic, args.seed, args.cache_dir) if args.synthetic
           else args.model or os.environ.get("FUNASR_NANO_MODEL") or DEFAULT_MODEL)
    kw = {k: v for k, v in (("dtype", args.dtype), ("audio_dtype", args.audio_dtype),
                            ("cache_dir", args.cache_dir), ("preset", args.preset)) if v is not None}
    return funasr_nano.load(src, **kw)


def run(args) -> int:
    from .config import DatasetConfigError, list_datasets, load_config
    from .data import DatasetLoadError

    if args.list_datasets:
        for name, path in list_datasets().items():
            try:
                cfg = load_config(path)
                print(f"{name:28s} {cfg.metric.upper()}  {cfg.describe_source()}")
            except DatasetConfigError as e:
                print(f"{name:28s} INVALID: {e}")
        return 0
    try:
        load_config(args.dataset)  # fail on a bad name before loading the model
    except DatasetConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        asr = load_model(args)
    except ImportError as e:  # e.g. the eval extra or a model module missing
        print(f"error: cannot load the model: {e}", file=sys.stderr)
        return EXIT_MODEL
    except (OSError, ValueError, MemoryError) as e:  # CheckpointError / ConfigError are ValueErrors
        print(f"error: cannot load model {args.model or 'synthetic'}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_MODEL
    from .runner import evaluate

    try:
        res = evaluate(asr, args.dataset, limit=args.limit, batch_size=args.batch_size,
                       output_dir=args.output_dir, progress=not args.no_progress, subset=args.subset,
                       streaming=args.streaming, max_new_tokens=args.max_new_tokens, warmup=args.warmup,
                       language=args.language, itn=args.itn, data_path=args.data_path,
                       data_files=args.data_files, revision=args.revision)
    except (DatasetConfigError, DatasetLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_DATA
    if args.json:
        print(json.dumps(res.to_dict(), ensure_ascii=False, indent=2))
        print(res.summary(), file=sys.stderr)
    else:
        print(res.summary())
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="funasr-nano eval", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
