"""Seeded random checkpoints in the official Fun-ASR-Nano-2512 directory layout.

They exercise loading, shapes and speed without the trained weights (which cannot be fetched
here). The directory holds a ``SYNTHETIC_WEIGHTS.txt`` marker so nothing mistakes its output for
the real model's.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import yaml

from ..checkpoint import SYNTHETIC_MARKER
from ..checkpoint.dtypes import float_to_bf16_bits
from ..checkpoint.torch_writer import LazyTensor, write_model_pt
from ..model.layout import expected_shapes
from ..paths import cache_root
from .sizes import get_preset

MARKER = SYNTHETIC_MARKER
COMPLETE = ".complete"  # written last, inside the temporary directory, before the rename
SEED = 0
TIED = ("llm.lm_head.weight", "llm.model.embed_tokens.weight")

CONFIGURATION_JSON = {
    "framework": "pytorch",
    "task": "auto-speech-recognition",
    "model": {"type": "funasr"},
    "file_path_metas": {"init_param": "model.pt", "config": "config.yaml"},
}


def _distribution(key: str, shape: tuple) -> tuple[float, float]:
    """(mean, std) for a tensor: keeps activations sane through 70 encoder + 28 decoder layers."""
    leaf = key.rsplit(".", 2)
    module, param = leaf[-2], leaf[-1]
    if param == "bias":
        return 0.0, 0.02
    if "norm" in module or module.endswith("layernorm"):
        return 1.0, 0.05                         # LayerNorm / RMSNorm gains
    if module == "fsmn_block":
        return 0.0, 0.05
    return 0.0, 0.02                             # matrices and embeddings


def _bf16_generator(rng: np.random.Generator, key: str, shape: tuple):
    mean, std = _distribution(key, shape)
    x = rng.standard_normal(shape, dtype=np.float32)
    x *= np.float32(std)
    if mean:
        x += np.float32(mean)
    import mlx.core as mx
    return mx.array(float_to_bf16_bits(x)).view(mx.bfloat16)


def synthetic_state_dict(funasr_cfg: dict, qwen_cfg: dict, seed: int = 0) -> dict:
    """``{key: LazyTensor}`` in sorted key order; tensors are drawn from one ``default_rng(seed)`` in
    that order when the writer asks for them. The tied LM head equals the embedding: the first of the
    two keys draws it, the second reuses it (only it is kept in memory between them)."""
    shapes = expected_shapes(funasr_cfg, qwen_cfg)
    rng = np.random.default_rng(seed)
    tied_cache: dict[str, object] = {}

    def make(key: str, shape: tuple):
        def fn():
            if key in TIED:
                if "value" in tied_cache:
                    return tied_cache.pop("value")
                value = _bf16_generator(rng, TIED[1], shape)
                tied_cache["value"] = value
                return value
            return _bf16_generator(rng, key, shape)
        return fn

    return {k: LazyTensor(shapes[k], make(k, shapes[k]), dtype="bfloat16") for k in sorted(shapes)}


def write_synthetic_checkpoint(out_dir, preset: str = "real", seed: int = 0) -> Path:
    """Write a checkpoint directory in the official layout with seeded random bf16 weights."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    funasr_cfg, qwen_cfg = get_preset(preset)

    with open(out / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(funasr_cfg, f, sort_keys=False, allow_unicode=True)
    with open(out / "configuration.json", "w", encoding="utf-8") as f:
        json.dump(CONFIGURATION_JSON, f, indent=2)
        f.write("\n")
    llm_dir = out / "Qwen3-0.6B"
    llm_dir.mkdir(exist_ok=True)
    with open(llm_dir / "config.json", "w", encoding="utf-8") as f:
        json.dump(qwen_cfg, f, indent=2)
        f.write("\n")
    from ..model.tokenizer import write_qwen3_tokenizer_files  # lazy: heavy asset, separate module

    write_qwen3_tokenizer_files(llm_dir)

    # The marker goes first: a directory never holds synthetic weights without it.
    (out / MARKER).write_text(
        "These are SYNTHETIC weights: seeded random numbers, NOT the trained Fun-ASR-Nano-2512 model.\n"
        "Transcripts produced with them are meaningless; use them only for loading, shape and speed tests.\n"
        f"preset: {preset}\n"
        f"seed: {seed}\n"
        "generator: funasr_nano.synthetic.write_synthetic_checkpoint (numpy default_rng, bf16)\n",
        encoding="utf-8",
    )
    write_model_pt(out / "model.pt", synthetic_state_dict(funasr_cfg, qwen_cfg, seed), dtype="bfloat16")
    return out


def is_synthetic(ckpt_dir) -> bool:
    """True when the directory carries the synthetic-weights marker."""
    return (Path(ckpt_dir) / MARKER).is_file()


def synthetic_dir(size: str = "real", seed: int = SEED, root=None) -> Path:
    """``<cache root>/synthetic-<size>-seed<seed>``: where `ensure_synthetic` keeps that checkpoint."""
    base = Path(root).expanduser() if root is not None else cache_root()
    return base / f"synthetic-{size}-seed{seed}"


def is_complete(ckpt_dir) -> bool:
    """Whether a synthetic checkpoint directory was written to the end.

    `ensure_synthetic` writes into a temporary directory and renames it, with `COMPLETE` written
    last. Directories from before that protocol (the CLI's, without `COMPLETE`; the benchmark
    suite's, written in place) count when their ``model.pt`` is a whole zip archive: a write cut
    short has no central directory at its end.
    """
    d = Path(ckpt_dir)
    if not (is_synthetic(d) and (d / "model.pt").is_file() and (d / "config.yaml").is_file()):
        return False
    return (d / COMPLETE).is_file() or zipfile.is_zipfile(d / "model.pt")


def ensure_synthetic(size: str = "real", seed: int = SEED, root=None, progress=None) -> Path:
    """The synthetic checkpoint in the cache, written on first use; the one writer the CLI, the
    evaluation, the benchmark suite and the tools share.

    Concurrent callers wait on a file lock; the checkpoint is written into a temporary directory
    that is renamed into place, so a reader never sees half a checkpoint and an existing complete
    one is never rewritten (its ``model.pt`` mtime keys the safetensors cache). ``progress`` gets
    one-line messages (the real size takes ~1 min and writes 1.9 GB).
    """
    d = synthetic_dir(size, seed, root)
    if is_complete(d):
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f".{d.name}.lock", "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: no lock, the rename still protects readers
            pass
        if is_complete(d):  # another process finished it while this one waited
            return d
        tmp = d.parent / f".{d.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        if progress:
            progress(f"writing the {size} synthetic checkpoint to {d} (one-time) ...")
        import time

        t0 = time.perf_counter()
        try:
            write_synthetic_checkpoint(tmp, preset=size, seed=seed)
            (tmp / COMPLETE).write_text("ok\n", encoding="utf-8")
            if d.exists():  # an incomplete leftover
                shutil.rmtree(d)
            os.replace(tmp, d)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if progress:
            progress(f"synthetic checkpoint written in {time.perf_counter() - t0:.1f} s")
    return d
