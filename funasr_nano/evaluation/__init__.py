"""Accuracy evaluation: WER / CER on standard test sets, measured as the field does.

    from funasr_nano.evaluation import evaluate
    res = evaluate(asr, "librispeech-test-clean", limit=200, output_dir="eval_results")
    res.wer, res.substitutions, res.rtf

Sets are described by ``datasets_cfg/<name>.yaml`` (`config`), read through Hugging Face ``datasets``
with audio decoded by soundfile (`data`), normalised with Whisper's English normaliser or FunASR's Mandarin
rule (`normalize`) and scored corpus-level with jiwer (`metrics`). Needs the ``eval`` extra.
"""

from .config import DatasetConfig, DatasetConfigError, list_datasets, load_config
from .metrics import ErrorCounts, corpus_counts, error_rate, utterance_counts
from .normalize import NORMALIZERS, get_normalizer

__all__ = ["evaluate", "EvalResult", "DatasetConfig", "DatasetConfigError", "DatasetLoadError", "load_config",
           "list_datasets", "dataset_available", "ErrorCounts", "error_rate", "utterance_counts",
           "corpus_counts", "NORMALIZERS", "get_normalizer", "SYNTHETIC_WARNING"]


def __getattr__(name):  # the runner and data modules import numpy/datasets: load them on first use
    if name in ("evaluate", "EvalResult", "SYNTHETIC_WARNING", "write_result"):
        from . import runner

        return getattr(runner, name)
    if name in ("DatasetLoadError", "dataset_available", "decode_audio", "open_dataset"):
        from . import data

        return getattr(data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
