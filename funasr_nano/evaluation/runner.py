"""Run a model over an evaluation set and score it: `evaluate(asr, "librispeech-test-clean")`.

Timing scope (as the Open ASR Leaderboard's): the model call only, i.e. feature extraction, encoder,
adaptor, prefill, greedy decoding and detokenisation. Reading the dataset, decoding the audio files,
resampling and text normalisation are outside it (they are reported as ``load_seconds``).
RTF = compute seconds / audio seconds; RTFx = 1 / RTF, both over the whole (sub)set.

Failed utterances (e.g. a clip too short for one fbank frame) get an empty hypothesis, so every
reference word counts as a deletion, and are listed with their error.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .config import DatasetConfig, load_config
from .data import DatasetLoadError, iter_examples, open_dataset, source_fingerprint
from .metrics import ErrorCounts, corpus_counts, utterance_counts
from .normalize import get_normalizer, normalizer_info
from ..io.formats import json_safe

SCHEMA = "funasr_nano.eval/1"
SYNTHETIC_WARNING = ("SYNTHETIC WEIGHTS: this model has seeded random weights, not the trained "
                     "Fun-ASR-Nano-2512; its transcripts are noise and these error rates are MEANINGLESS "
                     "(only the pipeline and the timing are exercised).")
REFERENCE_MAX_NEW_TOKENS = 512  # the official pipeline's default
TIMING_SCOPE = ("model call only: fbank+LFR features, encoder, adaptor, prompt embedding, prefill, greedy "
                "decode, detokenise; excludes dataset reading, audio decoding, resampling, text normalisation")


def auto_max_new_tokens(seconds: float) -> int:
    """Length cap used with synthetic weights (which never emit EOS): 12 tokens per audio second + 24,
    about twice what fast speech needs, at most the reference's 512."""
    return int(min(REFERENCE_MAX_NEW_TOKENS, 24 + math.ceil(12.0 * max(seconds, 0.0))))


@dataclass
class EvalResult:
    dataset: str
    metric: str                  # "wer" or "cer"
    error_rate: float            # the metric's corpus-level value (fraction, not %)
    wer: float | None
    cer: float | None
    hits: int
    substitutions: int
    deletions: int
    insertions: int
    ref_units: int               # reference words (WER) or characters (CER) scored
    n_utts: int                  # utterances read
    n_scored: int                # utterances in the corpus numbers
    n_empty_refs: int            # references empty after normalisation
    n_failed: int                # utterances whose transcription raised
    audio_seconds: float
    compute_seconds: float
    rtf: float
    rtfx: float
    load_seconds: float
    synthetic: bool
    preset: str | None
    model: dict
    language: str | None
    itn: bool
    normalizer: dict
    numbers: str
    batch_size: int
    max_new_tokens: str
    warmup: int
    stop_reasons: dict
    data: dict                   # source, revision, streaming, subset, limit, full_set ...
    environment: dict
    timing_scope: str = TIMING_SCOPE
    warnings: list = field(default_factory=list)
    created: str = ""
    result_path: str | None = None
    utterances_path: str | None = None
    utterances: list = field(default_factory=list, repr=False)  # per-utterance records (not in the JSON)

    @property
    def counts(self) -> ErrorCounts:
        return ErrorCounts(self.hits, self.substitutions, self.deletions, self.insertions)

    @property
    def error_rate_percent(self) -> float:
        return 100.0 * self.error_rate

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("utterances")
        d = {"schema": SCHEMA, **d}
        if self.synthetic:
            d = {"WARNING": SYNTHETIC_WARNING, **d}
        return json_safe(d)

    def summary(self) -> str:
        m = self.metric.upper()
        rate = "n/a" if math.isnan(self.error_rate) else f"{100 * self.error_rate:.2f} %"
        lines = []
        if self.synthetic:
            lines.append("!! " + SYNTHETIC_WARNING)
        lines += [
            f"{self.dataset}: {m} {rate}  (S={self.substitutions} D={self.deletions} I={self.insertions} "
            f"H={self.hits}, {self.ref_units} reference {'words' if self.metric == 'wer' else 'characters'})",
            f"  {self.n_scored}/{self.n_utts} utterances scored ({self.n_empty_refs} empty references, "
            f"{self.n_failed} failed), {self.audio_seconds:.1f} s audio",
            f"  compute {self.compute_seconds:.2f} s  RTF {self.rtf:.4f}  RTFx {self.rtfx:.2f}  "
            f"(batch {self.batch_size}, preset {self.preset}, max_new_tokens {self.max_new_tokens})",
            f"  normaliser {self.normalizer.get('name')}, language {self.language}, ITN {'on' if self.itn else 'off'}",
        ]
        lines += [f"  warning: {w}" for w in self.warnings if w != SYNTHETIC_WARNING]
        if self.result_path:
            lines.append(f"  result: {self.result_path}")
            lines.append(f"  per-utterance: {self.utterances_path}")
        return "\n".join(lines)


def _version(pkg: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:
        return None


def environment() -> dict:
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "packages": {p: _version(p) for p in ("mlx", "funasr-nano-mlx", "numpy", "datasets", "jiwer",
                                              "whisper-normalizer", "soundfile", "soxr")},
        "ld_preload": os.environ.get("LD_PRELOAD") or None,
    }
    try:
        from ..runtime.backend import device_label

        env["mlx_device"] = device_label()
    except Exception:  # pragma: no cover
        pass
    return env


def _model_info(asr) -> dict:
    return {
        "source": str(getattr(asr, "source", "") or ""),
        "preset": None if getattr(asr, "preset", None) is None else str(asr.preset),
        "dtype": str(getattr(asr, "dtype", "")) or None,
        "audio_dtype": str(getattr(asr, "audio_dtype", "")) or None,
        "synthetic": bool(getattr(asr, "synthetic", False)),
        "policy": asr.policy.to_dict() if getattr(asr, "policy", None) is not None else None,
    }


def _label(model: dict) -> str:
    if model.get("preset"):
        return model["preset"]
    d = (model.get("dtype") or "model").replace("mlx.core.", "")
    return d


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", s).strip("_") or "x"


def result_stem(dataset: str, model: dict, limit: int | None, subset: str = "first") -> str:
    parts = [_safe_name(dataset), _safe_name(_label(model))]
    if limit is not None:
        parts.append(f"{'n' if subset == 'first' else 'spread'}{limit}")
    if model.get("synthetic"):
        parts.append("SYNTHETIC")
    return "__".join(parts)


def _transcribe(asr, audios, language, itn, max_new_tokens):
    """One call for the batch (transcribe_batch when the model has it), else one call per clip."""
    if len(audios) > 1 and hasattr(asr, "transcribe_batch"):
        return asr.transcribe_batch(audios, language=language, itn=itn, max_new_tokens=max_new_tokens)
    return [asr.transcribe(a, language=language, itn=itn, max_new_tokens=max_new_tokens) for a in audios]


def _run_batch(asr, batch, language, itn, max_new_tokens):
    """-> (list of (text, stop_reason, n_tokens, error)), seconds). A failing batch is retried clip by clip
    so one bad clip does not sink the others."""
    t0 = time.perf_counter()
    try:
        outs = _transcribe(asr, [ex.audio for ex in batch], language, itn, max_new_tokens)
        secs = time.perf_counter() - t0
        return [(o.text, getattr(o, "stop_reason", None), len(getattr(o, "tokens", ()) or ()), None,
                 getattr(o, "timings", None)) for o in outs], secs
    except Exception as e:
        if len(batch) == 1:
            return [("", "error", 0, f"{type(e).__name__}: {e}", None)], time.perf_counter() - t0
    rows, secs = [], 0.0
    for ex in batch:
        r, s = _run_batch(asr, [ex], language, itn, max_new_tokens)
        rows += r
        secs += s
    return rows, secs


def _progress(total, enabled, desc):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with datasets
        return None
    return tqdm(total=total, desc=desc, unit="utt", file=sys.stderr, dynamic_ncols=True)


def _batch_cap(batch, max_new_tokens, synthetic) -> int:
    """The length cap for one batch: the caller's, else (synthetic weights never emit EOS) the automatic
    cap of the batch's longest clip, else the reference's 512."""
    if max_new_tokens is not None:
        return max_new_tokens
    return auto_max_new_tokens(max(ex.seconds for ex in batch)) if synthetic else REFERENCE_MAX_NEW_TOKENS


def _warm_up(asr, batch, language, itn, cap, n):
    """`n` untimed short transcriptions of the first batch (first-call allocations, lazy init); their
    failures are ignored, the timed call reports them."""
    for _ in range(n):
        try:
            _transcribe(asr, [ex.audio for ex in batch], language, itn, min(cap, 8))
        except Exception:
            pass


def _utterance_records(batch, outs, secs, synthetic) -> list[dict]:
    """One record per clip of a decoded batch (the batch's seconds shared evenly among its clips)."""
    recs = []
    for ex, (text, reason, ntok, err, stages) in zip(batch, outs):
        rec = {"index": ex.index, "id": ex.id, "audio_seconds": round(ex.seconds, 4),
               "source_rate": ex.source_rate, "ref": ex.text, "hyp": text or "",
               "stop_reason": reason, "n_tokens": ntok, "compute_seconds": secs / len(batch),
               "batch_size": len(batch)}
        if isinstance(stages, dict):  # per stage, for the whole batch the clip was decoded in
            rec["batch_stage_seconds"] = {k: round(v, 6) if isinstance(v, float) else v
                                          for k, v in stages.items()}
        if err:
            rec["error"] = err
        if synthetic:
            rec["synthetic"] = True
        recs.append(rec)
    return recs


def _decode_all(asr, cfg, rows, data_info, lang, bar, *, batch_size, max_new_tokens, warmup, synthetic):
    """Read the set in batches of `batch_size` and transcribe each -> (utterance records, compute seconds,
    reading seconds). Only the model calls are timed as compute (the time between batches is reading);
    failures of the datasets / fsspec / hub stack while reading become a DatasetLoadError."""
    utts: list[dict] = []
    compute = 0.0
    warmed = False

    def flush(batch):
        nonlocal compute, warmed
        if not batch:
            return
        cap = _batch_cap(batch, max_new_tokens, synthetic)
        if not warmed:
            warmed = True
            _warm_up(asr, batch, lang, cfg.itn, cap, warmup)
        outs, secs = _run_batch(asr, batch, lang, cfg.itn, cap)
        compute += secs
        utts.extend(_utterance_records(batch, outs, secs, synthetic))
        if bar is not None:
            bar.update(len(batch))

    batch = []
    t_read = time.perf_counter()
    read = 0.0
    try:
        for ex in iter_examples(cfg, rows, data_info):
            read += time.perf_counter() - t_read
            batch.append(ex)
            if len(batch) == batch_size:
                flush(batch)
                batch = []
            t_read = time.perf_counter()
        flush(batch)
    except DatasetLoadError:
        raise
    except Exception as e:
        if "datasets" in type(e).__module__ or "fsspec" in type(e).__module__ or "huggingface" in type(e).__module__:
            raise DatasetLoadError(f"reading {cfg.describe_source()} failed after {len(utts)} utterances: "
                                   f"{type(e).__name__}: {e}") from e
        raise
    finally:
        if bar is not None:
            bar.close()
    return utts, compute, read


def _score(utts, norm, cfg):
    """Normalise and score every record in place -> (corpus counts, n empty references, n scored,
    n failed, audio seconds, stop-reason histogram)."""
    for u in utts:
        u["ref_norm"] = norm(u["ref"])
        u["hyp_norm"] = norm(u["hyp"])
    per = utterance_counts([u["ref_norm"] for u in utts], [u["hyp_norm"] for u in utts], cfg.metric)
    for u, c in zip(utts, per):
        u.update({"hits": c.hits, "substitutions": c.substitutions, "deletions": c.deletions,
                  "insertions": c.insertions, "ref_units": c.ref_units,
                  "rate": None if math.isnan(c.rate) else c.rate, "empty_ref": c.ref_units == 0})
    tot = corpus_counts(per, cfg.empty_references)
    n_empty = sum(1 for c in per if c.ref_units == 0)
    n_scored = sum(1 for c in per if c.ref_units or cfg.empty_references == "count")
    n_failed = sum(1 for u in utts if "error" in u)
    audio_s = sum(u["audio_seconds"] for u in utts)
    stops: dict = {}
    for u in utts:
        stops[str(u["stop_reason"])] = stops.get(str(u["stop_reason"]), 0) + 1
    return tot, n_empty, n_scored, n_failed, audio_s, stops


def _score_warnings(utts, cfg, *, n_empty, n_failed, stops, synthetic, policy, full) -> list[str]:
    """What a reader of the numbers must know: empty references, failed clips, capped decodes, digits
    against spoken-form references, a full split of unexpected size."""
    warnings = []
    if n_empty:
        warnings.append(f"{n_empty} reference(s) empty after normalisation: "
                        + ("left out of the score (Open ASR Leaderboard rule)" if cfg.empty_references == "skip"
                           else "their insertions are counted"))
    if n_failed:
        first = next(u for u in utts if "error" in u)
        warnings.append(f"{n_failed} utterance(s) failed to transcribe and are scored as empty hypotheses "
                        f"(first: {first['id']}: {first['error']})")
    if not synthetic and stops.get("max_new_tokens"):
        warnings.append(f"{stops['max_new_tokens']} utterance(s) hit the max_new_tokens cap ({policy})")
    if cfg.metric == "cer" and not cfg.itn:
        digits = sum(1 for u in utts if re.search(r"[0-9]", u["hyp_norm"]))
        if digits and not synthetic:
            warnings.append(f"{digits} hypothesis(es) contain Arabic digits although ITN is off; the references "
                            "are spoken-form Chinese numerals, so these count as errors")
    if full and cfg.num_examples and len(utts) != cfg.num_examples:
        warnings.append(f"read {len(utts)} utterances, the config expects {cfg.num_examples} for the full split")
    return warnings


def _data_record(cfg, data_info, *, full, fingerprint) -> dict:
    """The result's ``data`` block: where the set came from and how it was read (plus, with
    `fingerprint`, the source's fingerprint)."""
    data = {**data_info, "name": cfg.name, "description": cfg.description, "hub_id": cfg.hub_id,
            "hub_config": cfg.hub_config, "split": cfg.split, "revision": cfg.revision,
            "path": cfg.path, "data_files": cfg.data_files, "audio_column": cfg.audio_column,
            "text_column": cfg.text_column, "id_column": cfg.id_column, "full_set": full,
            "num_examples_expected": cfg.num_examples, "config_file": cfg.source_file,
            "empty_references": cfg.empty_references}
    data.pop("base_dir", None)
    data.pop("audio_key", None)
    if fingerprint:
        data.update(source_fingerprint(cfg))
    return data


def evaluate(asr, dataset_name_or_cfg="smoke", limit: int | None = None, batch_size: int = 1,
             output_dir=None, progress: bool = True, *, subset: str = "first", streaming: bool | None = None,
             max_new_tokens: int | None = None, warmup: int = 1, language: str | None = None,
             itn: bool | None = None, data_path=None, data_files=None, revision: str | None = None,
             fingerprint: bool = True) -> EvalResult:
    """Transcribe an evaluation set with `asr` and score it.

    `dataset_name_or_cfg`: a set name from ``datasets_cfg/`` (``smoke``, ``librispeech-test-clean`` ...),
    a YAML path, a dict or a `DatasetConfig`. `limit`: first N utterances (``subset="spread"``: N spread
    evenly over the split). `max_new_tokens`: None = the reference's 512 for trained weights, and for
    synthetic weights (which never stop) `auto_max_new_tokens` of the batch's longest clip. `warmup`:
    number of untimed short transcriptions before timing starts. `language` / `itn` override the set's
    prompt settings. `data_path` / `data_files` / `revision` override its source. With `output_dir`, writes
    ``<stem>.json`` (the result) and ``<stem>.utterances.jsonl`` (ref / hyp per utterance) there.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg: DatasetConfig = load_config(dataset_name_or_cfg)
    cfg = cfg.with_overrides(path=os.fspath(data_path) if data_path is not None else None,
                             data_files=data_files, revision=revision, language=language, itn=itn)
    from ..model.prompt import resolve_language

    lang = resolve_language(cfg.language)
    norm = get_normalizer(cfg.normalizer)
    model = _model_info(asr)
    synthetic = model["synthetic"]
    warnings: list[str] = [SYNTHETIC_WARNING] if synthetic else []
    if synthetic:
        print("WARNING: " + SYNTHETIC_WARNING, file=sys.stderr)
    policy = (str(max_new_tokens) if max_new_tokens is not None else
              ("auto (12/s + 24, <= 512; synthetic weights)" if synthetic else str(REFERENCE_MAX_NEW_TOKENS)))

    t_load0 = time.perf_counter()
    rows, total, data_info = open_dataset(cfg, limit=limit, subset=subset, streaming=streaming)
    load_seconds = time.perf_counter() - t_load0
    bar = _progress(total, progress, cfg.name)
    utts, compute, read = _decode_all(asr, cfg, rows, data_info, lang, bar, batch_size=batch_size,
                                      max_new_tokens=max_new_tokens, warmup=warmup, synthetic=synthetic)
    load_seconds += read
    if not utts:
        raise DatasetLoadError(f"dataset {cfg.name!r} ({cfg.describe_source()}) yielded no utterance")

    tot, n_empty, n_scored, n_failed, audio_s, stops = _score(utts, norm, cfg)
    full = limit is None
    warnings += _score_warnings(utts, cfg, n_empty=n_empty, n_failed=n_failed, stops=stops,
                                synthetic=synthetic, policy=policy, full=full)
    data = _data_record(cfg, data_info, full=full, fingerprint=fingerprint)

    rate = tot.rate
    res = EvalResult(
        dataset=cfg.name, metric=cfg.metric, error_rate=rate,
        wer=rate if cfg.metric == "wer" else None, cer=rate if cfg.metric == "cer" else None,
        hits=tot.hits, substitutions=tot.substitutions, deletions=tot.deletions, insertions=tot.insertions,
        ref_units=tot.ref_units, n_utts=len(utts), n_scored=n_scored, n_empty_refs=n_empty, n_failed=n_failed,
        audio_seconds=audio_s, compute_seconds=compute,
        rtf=compute / audio_s if audio_s else math.nan, rtfx=audio_s / compute if compute else math.nan,
        load_seconds=load_seconds, synthetic=synthetic, preset=model["preset"] or _label(model), model=model,
        language=cfg.language, itn=cfg.itn, normalizer=normalizer_info(cfg.normalizer), numbers=cfg.numbers,
        batch_size=batch_size, max_new_tokens=policy, warmup=warmup, stop_reasons=stops, data=data,
        environment=environment(), warnings=warnings,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), utterances=utts,
    )
    if output_dir is not None:
        write_result(res, output_dir, result_stem(cfg.name, model, limit, subset))
    return res


def write_result(res: EvalResult, output_dir, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.utterances.jsonl`` (one record per utterance) in `output_dir`."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rpath, upath = out / f"{stem}.json", out / f"{stem}.utterances.jsonl"
    res.result_path, res.utterances_path = str(rpath), str(upath)
    with open(upath, "w", encoding="utf-8") as f:
        for u in res.utterances:
            f.write(json.dumps(json_safe(u), ensure_ascii=False) + "\n")
    d = res.to_dict()
    tmp = rpath.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(d, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(rpath)
    return rpath, upath
