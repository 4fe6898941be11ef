"""Validating a state dict against the network's keys and shapes, and finding a checkpoint directory
(local path or hub repo id).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import INDEX_NAME, SINGLE_NAME, CheckpointError

try:  # MLX is needed to produce arrays; the writer also works from numpy alone.
    import mlx.core as mx
except ImportError:  # pragma: no cover - mlx is a hard dependency of the package
    mx = None



def _shape_of(v) -> tuple:
    if hasattr(v, "shape"):
        return tuple(int(s) for s in v.shape)
    return tuple(int(s) for s in v)


def _name_list(title: str, items: list[str], limit: int = 20) -> str:
    shown = items[:limit]
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"  {title} ({len(items)}):\n" + "".join(f"    {s}\n" for s in shown).rstrip("\n") + more


def check_state_dict(weights: Mapping[str, Any], expected: Mapping[str, tuple],
                     optional_prefixes: Iterable[str] = ("ctc_decoder.", "ctc.")) -> None:
    """Raise one CheckpointError naming every missing, unexpected and mis-shaped key.

    ``weights`` maps keys to arrays or shapes. Keys under ``optional_prefixes`` may be present or
    absent (present ones are still shape-checked when ``expected`` lists them).
    """
    prefixes = tuple(optional_prefixes or ())
    optional = (lambda k: k.startswith(prefixes)) if prefixes else (lambda k: False)
    missing = sorted(k for k in expected if k not in weights and not optional(k))
    unexpected = sorted(k for k in weights if k not in expected and not optional(k))
    misshaped = []
    for k in sorted(k for k in expected if k in weights):
        got, want = _shape_of(weights[k]), tuple(expected[k])
        if got != want:
            misshaped.append(f"{k}: checkpoint {list(got)} vs model {list(want)}")
    if not (missing or unexpected or misshaped):
        return
    parts = [f"checkpoint does not match the model: {len(missing)} missing, {len(unexpected)} unexpected, "
             f"{len(misshaped)} mis-shaped keys"]
    if missing:
        parts.append(_name_list("missing", missing))
    if unexpected:
        parts.append(_name_list("unexpected", unexpected))
    if misshaped:
        parts.append(_name_list("mis-shaped", misshaped))
    raise CheckpointError("\n".join(parts))


_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
HUB_PATTERNS = ["model.pt", "config.yaml", "configuration.json", "Qwen3-0.6B/*",
                "*.safetensors", "*.safetensors.index.json",
                # the Transformers (-hf) and mlx-community forms (funasr_nano.checkpoint.forms)
                "config.json", "preprocessor_config.json", "generation_config.json", "tokenizer*.json",
                "vocab.json", "merges.txt"]


def resolve_checkpoint(path_or_repo_id, cache_dir=None, revision=None) -> Path:
    """A local checkpoint directory, or a Hugging Face repo id downloaded with ``snapshot_download``."""
    s = os.fspath(path_or_repo_id)
    p = Path(s).expanduser()
    if p.is_dir():
        return p
    if p.is_file():
        if p.name in ("model.pt", SINGLE_NAME, INDEX_NAME):
            return p.parent
        raise CheckpointError(f"{p} is a file; pass the checkpoint directory that holds model.pt and config.yaml")
    if not _REPO_ID.match(s) or ".." in s:
        raise CheckpointError(f"checkpoint {s!r} not found: it is not an existing local directory and "
                              "does not look like a Hugging Face repo id ('org/name')")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise CheckpointError(f"{s!r} is not a local directory and huggingface_hub is not installed to "
                              "download it as a repo id") from e
    try:
        local = snapshot_download(repo_id=s, revision=revision, cache_dir=cache_dir,
                                  allow_patterns=HUB_PATTERNS)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {s!r}: no local directory of that name, and downloading it from the Hugging Face "
            f"Hub (repo {s}, revision {revision or 'main'}, files {HUB_PATTERNS}) failed: "
            f"{type(e).__name__}: {e}. If you are offline, download it elsewhere and pass the local "
            "directory.") from e
    local = Path(local)
    if not ((local / "model.pt").is_file() or (local / SINGLE_NAME).is_file() or (local / INDEX_NAME).is_file()):
        raise CheckpointError(f"downloaded {s!r} to {local}, but it holds no model.pt or safetensors weights")
    return local
