"""Shared fixtures of the asv suite: grid, checkpoint, memoized models, deterministic audio.

Rules that keep numbers comparable across commits, machines and presets (see README.md here):

* **Pinned decode length.** Every decode runs with ``ignore_eos=True`` for exactly
  ``decode_tokens(seconds) = TOKENS_PER_SECOND * seconds`` new tokens (4 per second of audio,
  about the rate of fast read speech: 40 tokens for a 10 s clip), whatever the weights say.
* **Deterministic audio.** Clip ``i`` of a batch is ``funasr_nano.synthetic.signals.speech_like(seconds,
  seed=SEED + i)``: all clips of one length have the same number of samples, so a batch needs no
  padding and its prompt rows are equally long.
* **Model.** ``$FUNASR_NANO_MODEL`` (a checkpoint directory or repo id) when set; otherwise the
  synthetic checkpoint with the released model's shapes and seeded random weights, written once to
  ``<cache>/synthetic-real-seed0`` (`funasr_nano.paths.cache_root`: ``$FUNASR_NANO_CACHE``, else
  ``$XDG_CACHE_HOME/funasr_nano``, else ``~/.cache/funasr_nano``) by the package's ``ensure_synthetic``.
  ``FUNASR_NANO_BENCH_SYNTHETIC=tiny`` swaps in the tiny test shapes (dry runs / CI only).
* **One load per process.** asv spawns a process per benchmark and parameter set and re-runs
  ``setup`` before every sample; models, clips and warm-up state are memoized per process here.
* **Warm-up inside setup** (once per process and parameter set), because ``asv run --quick``
  disables asv's own warm-up and times the very first call otherwise.
* **Lower is better.** asv flags increases as regressions, so the suite tracks RTF, ms per token,
  prefill ms per token, bytes and error rates; RTFx and tokens/s appear only in reports.

The grid below is identical on every machine and commit (asv's history breaks when ``params``
change); parameter sets a commit or machine cannot run are skipped from ``setup`` by raising
``NotImplementedError``. The quick suite selects a subset of it with ``asv run -b`` regexes.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

# ----- the grid ---------------------------------------------------------------------------------------
# A pinned copy of funasr_nano.precision.plan.PRESETS (history needs a fixed grid): the float
# precisions, MLX affine 8/4-bit (group 64, everything quantized; compute dtype from the backend
# policy: fp32 on the CPU, bf16 on GPUs, recorded by meta.Policy), and 4-bit LLM with a bf16 audio
# path.
PRESETS = ["fp32", "bf16", "fp16", "q8", "q4", "q4-llm+bf16-audio"]
# MLX 0.32's microscaling float modes: a second grid (benchmarks/modes.py) rather than new values
# in PRESETS, because changing a benchmark's params or version discards its stored history in asv.
MODE_PRESETS = ["mxfp4", "mxfp4-llm+bf16-audio", "nvfp4", "mxfp8"]
BATCH_SIZES = [1, 4]
AUDIO_SECONDS = [5, 10, 30]
TOKENS_PER_SECOND = 4
SEED = 0
WARMUP_TOKENS = 4  # warm-up decodes are short: first-call costs do not depend on the length
REFERENCE_PRESET = "fp32"  # what quantized presets are compared with (fidelity)

# Samples of the end-to-end / decode-loop timings (the regression sentinels): at least 7. asv
# compare's Mann-Whitney U test is two-sided with p < 0.002; two fully separated groups of 6 give
# p = 2/924 = 0.0022, so 6 against 6 can never be "different" (asv still takes that path instead of
# its CI fallback). 7 samples on one side suffice against a 6-sample baseline (p = 0.0012).
SENTINEL_REPEAT = (7, 10, 60.0)

# Bump when the *method* of a benchmark changes (asv's default version is a hash of the source,
# which would also start a new series on harmless refactors).
SUITE_VERSION = "1"

ENV_MODEL = "FUNASR_NANO_MODEL"
ENV_SYNTHETIC = "FUNASR_NANO_BENCH_SYNTHETIC"    # "real" (default) or "tiny"
ENV_REPEAT = "FUNASR_NANO_BENCH_REPEAT"          # in-body repeats of track_ measurements (default 3)


def decode_tokens(seconds: float) -> int:
    """The pinned number of new tokens decoded for a clip of ``seconds`` (EOS ignored)."""
    return max(2, int(round(TOKENS_PER_SECOND * seconds)))


def track_repeats() -> int:
    try:
        return max(1, int(os.environ.get(ENV_REPEAT, "3")))
    except ValueError:
        return 3


# ----- MLX helpers (imported lazily: discovery and skips must not pay for MLX) ---------------------------
def mx():
    import mlx.core as _mx

    return _mx


def sync(*arrays):
    """Evaluate outputs and wait for the device: every timed body ends here."""
    m = mx()
    if arrays:
        m.eval(*arrays)
    if hasattr(m, "synchronize"):
        m.synchronize()


def reset_peak():
    m = mx()
    f = getattr(m, "reset_peak_memory", None) or m.metal.reset_peak_memory
    f()


def peak_bytes() -> int:
    m = mx()
    f = getattr(m, "get_peak_memory", None) or m.metal.get_peak_memory
    return int(f())


def active_bytes() -> int:
    m = mx()
    f = getattr(m, "get_active_memory", None) or m.metal.get_active_memory
    return int(f())


def clear_cache():
    m = mx()
    f = getattr(m, "clear_cache", None) or getattr(m.metal, "clear_cache", None)
    if f:
        f()


# ----- the package, across its layouts -------------------------------------------------------------------
def first_of(*candidates: str):
    """The first ``"module:attribute"`` this commit has. The package was reorganised into
    subpackages (funasr_nano.model / runtime / precision / checkpoint / synthetic / io / cli);
    asv runs this suite against commits from before and after that, so each name is looked up at
    its new home first, then at its old one. Raises ImportError naming every place tried."""
    import importlib

    errors = []
    for cand in candidates:
        mod, _, attr = cand.partition(":")
        try:
            m = importlib.import_module(mod)
            return getattr(m, attr) if attr else m
        except (ImportError, AttributeError) as e:
            errors.append(f"{cand}: {e}")
    raise ImportError("; ".join(errors))


# ----- checkpoint -----------------------------------------------------------------------------------------
def cache_root() -> Path:
    try:
        return first_of("funasr_nano.paths:cache_root")()
    except ImportError:  # before funasr_nano.paths: the layout's cache root, minus XDG_CACHE_HOME
        env = os.environ.get("FUNASR_NANO_CACHE")
        return Path(env).expanduser() if env else Path.home() / ".cache" / "funasr_nano"


def synthetic_preset() -> str:
    return os.environ.get(ENV_SYNTHETIC, "real").strip() or "real"


def synthetic_dir() -> Path:
    return cache_root() / f"synthetic-{synthetic_preset()}-seed{SEED}"


def ensure_synthetic_checkpoint() -> Path:
    """The synthetic checkpoint: the package's own `ensure_synthetic` (the one the CLI uses: a
    checkpoint either wrote is reused, never rewritten), or for commits before it, a writer with
    the same lock and completion file."""
    try:
        ensure = first_of("funasr_nano.synthetic:ensure_synthetic")
    except ImportError:
        return _legacy_ensure_synthetic()
    return ensure(synthetic_preset(), SEED, root=cache_root())


def _legacy_ensure_synthetic() -> Path:
    out = synthetic_dir()
    done = out / ".complete"
    if done.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    with open(lock_path, "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows
            pass
        if not done.is_file():
            try:
                from funasr_nano.synthetic import write_synthetic_checkpoint
            except ImportError as e:
                raise NotImplementedError(f"this commit cannot write synthetic checkpoints: {e}")
            write_synthetic_checkpoint(out, preset=synthetic_preset(), seed=SEED)
            done.write_text("ok\n")
    return out


def checkpoint() -> str:
    """The checkpoint the suite runs: ``$FUNASR_NANO_MODEL`` or the synthetic real-shaped one."""
    env = os.environ.get(ENV_MODEL, "").strip()
    if env:
        return env
    return str(ensure_synthetic_checkpoint())


def uses_synthetic_weights() -> bool:
    ck = checkpoint()
    try:
        from funasr_nano.synthetic import is_synthetic

        return bool(is_synthetic(ck))
    except ImportError:
        return (Path(ck) / "SYNTHETIC_WEIGHTS.txt").is_file()


# ----- models, memoized per process ---------------------------------------------------------------------
_MODELS: dict = {}


def _supports_preset(preset: str) -> bool:
    try:
        parse_preset = first_of("funasr_nano.precision.plan:parse_preset", "funasr_nano.precision:parse_preset")
    except ImportError:
        return preset == "fp32"
    try:
        parse_preset(preset)
    except Exception:
        return False
    return True


def unsupported_mode_reason(preset: str) -> str | None:
    """Why this backend cannot run `preset`'s quantization mode (None: it can, or this commit
    cannot tell). A mode a backend lacks is skipped with this reason, never replaced."""
    try:
        parse_preset = first_of("funasr_nano.precision.plan:parse_preset", "funasr_nano.precision:parse_preset")
        check = first_of("funasr_nano.precision.quantize:check_modes_supported",
                         "funasr_nano.precision:check_modes_supported")
        unsupported = first_of("funasr_nano.precision.quantize:UnsupportedModeError",
                               "funasr_nano.precision:UnsupportedModeError")
        from funasr_nano.runtime.backend import resolve_policy
    except ImportError:
        return None
    try:
        check(parse_preset(preset, resolve_policy().quant_compute))
    except unsupported as e:
        return str(e)
    return None


def load_model(preset: str):
    """A loaded ``FunASRNanoASR`` for ``preset`` (memoized). Raises NotImplementedError (= asv
    skip) when this commit does not know the preset."""
    if preset in _MODELS:
        return _MODELS[preset]
    if not _supports_preset(preset):
        raise NotImplementedError(f"preset {preset!r} is not available in this version")
    why = unsupported_mode_reason(preset)
    if why:
        raise NotImplementedError(why)
    _MODELS[preset] = load_fresh(preset)
    return _MODELS[preset]


def load_fresh(preset: str):
    """Load the suite's checkpoint with ``preset`` (not memoized)."""
    import funasr_nano

    ck = checkpoint()
    try:
        return funasr_nano.load(ck, preset=preset)
    except TypeError:  # a version whose load() has no presets
        if preset != "fp32":
            raise NotImplementedError(f"preset {preset!r} is not available in this version")
        return funasr_nano.load(ck)


def drop_models(keep=()):
    for k in list(_MODELS):
        if k not in keep:
            del _MODELS[k]
    clear_cache()


# ----- audio ------------------------------------------------------------------------------------------------
_CLIPS: dict = {}


def clips(seconds: float, batch: int = 1) -> list:
    """``batch`` deterministic speech-like clips of ``seconds`` each (float32, 16 kHz)."""
    key = (seconds, batch)
    if key not in _CLIPS:
        speech_like = first_of("funasr_nano.synthetic.signals:speech_like", "funasr_nano.test_audio:speech_like")
        _CLIPS[key] = [speech_like(seconds, seed=SEED + i) for i in range(batch)]
    return _CLIPS[key]


# ----- stage helpers ------------------------------------------------------------------------------------
def features(asr, wavs):
    import numpy as np

    return np.stack([asr.features(w) for w in wavs])  # equal lengths: no padding


def encode(asr, feats):
    return asr.encode(feats)


def adapt(asr, enc):
    return asr.adapt(enc)  # [B, ceil(T/8), D]: rows are equally long, so the cut is per row exact


def prompt_embeds(asr, aud):
    """Prompt embeddings [B, S, D] for adaptor output [B, L, D] (the default prompt)."""
    m = mx()
    p = asr.prompt(int(aud.shape[1]))
    rows = [asr.embed_prompt(p, aud[i]) for i in range(aud.shape[0])]
    return m.concatenate(rows, axis=0) if len(rows) > 1 else rows[0]


def embeds_for(asr, seconds, batch):
    """(embeds [B, S, D] evaluated, prompt length S) for the grid's clips."""
    e = prompt_embeds(asr, adapt(asr, encode(asr, features(asr, clips(seconds, batch)))))
    sync(e)
    return e, int(e.shape[1])


def transcribe(asr, wavs, n_tokens):
    """End to end, pinned decode length; one clip -> transcribe, several -> transcribe_batch."""
    if len(wavs) == 1:
        return [asr.transcribe(wavs[0], max_new_tokens=n_tokens, ignore_eos=True)]
    if not hasattr(asr, "transcribe_batch"):
        raise NotImplementedError("this version has no transcribe_batch")
    return asr.transcribe_batch(list(wavs), max_new_tokens=n_tokens, ignore_eos=True)


def generate(asr, embeds, n_tokens):
    """The package's greedy decode loop with a pinned length; returns the number of tokens."""
    tokens, _ = asr.generate(embeds, max_new_tokens=n_tokens, ignore_eos=True)
    sync()
    return len(tokens)


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    sync()
    return time.perf_counter() - t0


def median_time(fn, *args, repeats=None) -> float:
    n = repeats or track_repeats()
    return statistics.median(timed(fn, *args) for _ in range(n))


# ----- base class -----------------------------------------------------------------------------------------
class ModelBenchmark:
    """Common asv attributes: one sample = one call, no asv warm-up (setup warms), one round per
    process (every round would reload the model), generous timeouts (slow machines, ref. BLAS)."""

    params = [PRESETS, BATCH_SIZES, AUDIO_SECONDS]
    param_names = ["preset", "batch", "seconds"]
    number = 1
    repeat = (3, 7, 120.0)
    rounds = 1
    warmup_time = 0.0
    timeout = 3600
    version = SUITE_VERSION

    _warmed: set = set()

    def warm_once(self, key, fn, *args):
        """Run ``fn(*args)`` once per process for ``key`` (first-call costs stay out of samples)."""
        k = (type(self).__name__,) + tuple(key)
        if k not in ModelBenchmark._warmed:
            fn(*args)
            sync()
            ModelBenchmark._warmed.add(k)
