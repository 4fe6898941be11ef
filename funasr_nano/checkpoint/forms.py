"""Which published form a checkpoint directory holds, and its weights in this port's layout.

Forms (``detect_form``):

``official``      FunASR's layout: ``config.yaml`` + ``Qwen3-0.6B/`` + ``model.pt`` (converted once into
                  the safetensors cache, `funasr_nano.checkpoint`) or safetensors with the same keys.
``precision``     written by `funasr_nano.precision.save_quantized` (``config.yaml`` + ``quantization.json``).
``transformers``  ``FunAudioLLM/Fun-ASR-Nano-2512-hf`` (`funasr_nano.checkpoint.hf`).
``mlx-audio``     ``mlx-community/Fun-ASR-Nano-2512[-fp16|-8bit|-4bit]`` (`funasr_nano.checkpoint.mlx_audio`).

`open_checkpoint` reads a directory's configuration into a `CheckpointForm`; its
`load_weights` returns ``{official key: mx.array}`` checked against the network (every error
names the form, the directory and the missing / unexpected / mis-shaped keys).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..model.config import ConfigError, ModelConfig, llm_dir
from . import CheckpointError
from . import hf as checkpoint_hf
from . import mlx_audio as checkpoint_mlx_audio
from .resolve import check_state_dict

OFFICIAL, PRECISION = "official", "precision"
FORMS = (OFFICIAL, PRECISION, checkpoint_hf.FORM, checkpoint_mlx_audio.FORM)
LABELS = {OFFICIAL: "official FunASR checkpoint", PRECISION: "funasr_nano quantized checkpoint",
          checkpoint_hf.FORM: checkpoint_hf.LABEL, checkpoint_mlx_audio.FORM: checkpoint_mlx_audio.LABEL}


class CheckpointWarning(UserWarning):
    """Something in a checkpoint was ignored (e.g. a trainer's epoch counter in model.pt)."""


def _read_json(p: Path) -> dict | None:
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def detect_form(directory) -> str:
    """The form of a checkpoint directory (one of `FORMS`); CheckpointError when none fits."""
    d = Path(directory)
    if (d / "config.yaml").is_file():
        from . import QUANT_CONFIG

        return PRECISION if (d / QUANT_CONFIG).is_file() else OFFICIAL
    cfg = _read_json(d / "config.json") if (d / "config.json").is_file() else None
    if cfg is not None and checkpoint_hf.is_hf_config(cfg):
        return checkpoint_hf.FORM
    if cfg is not None and checkpoint_mlx_audio.is_mlx_audio_config(cfg):
        return checkpoint_mlx_audio.FORM
    listing = sorted(p.name for p in d.iterdir())[:20] if d.is_dir() else []
    what = (f"its config.json has model_type {cfg.get('model_type')!r}" if cfg is not None
            else "it has neither config.yaml nor a readable config.json")
    raise CheckpointError(
        f"{d}: not a Fun-ASR-Nano checkpoint in any known form ({what}). Expected config.yaml + model.pt "
        "(official FunASR), or config.json with model_type 'fun_asr_nano' and safetensors (Transformers -hf, "
        f"or mlx-audio / mlx-community). Found: {listing}")


@dataclass
class CheckpointForm:
    form: str
    directory: Path
    cfg: ModelConfig
    tokenizer_dir: Path
    raw_config: dict = field(default_factory=dict, repr=False)
    ignored: list = field(default_factory=list)  # non-tensor entries of model.pt that were skipped

    @property
    def label(self) -> str:
        return LABELS[self.form]

    def load_weights(self, expected: Mapping[str, tuple], optional_prefixes=(), cache_dir=None) -> dict:
        """``{official key: mx.array}`` (lazily loaded), checked against ``expected`` shapes.

        For a quantized mlx-audio checkpoint ``expected`` must describe the network after
        `quantize_modules` with `quantization` (so ``.scales``/``.biases`` are expected).
        """
        d = self.directory
        if self.form == checkpoint_hf.FORM:
            weights = checkpoint_hf.load_weights(d, expected, self.cfg.raw["config.yaml"])
        elif self.form == checkpoint_mlx_audio.FORM:
            weights = checkpoint_mlx_audio.load_weights(d)
        else:
            from .cache import _cache_metadata, cache_dir_for, load_checkpoint_weights

            weights = load_checkpoint_weights(d, cache_dir=cache_dir)
            if (d / "model.pt").is_file() and not _has_safetensors(d):
                meta = _cache_metadata(cache_dir_for(d / "model.pt", cache_dir)) or {}
                self.ignored = json.loads(meta.get("ignored_entries", "[]"))
        try:
            check_state_dict(weights, expected, optional_prefixes=optional_prefixes)
        except CheckpointError as e:
            raise CheckpointError(f"{d}: {self.label}: {e}") from e
        if self.ignored:
            shown = ", ".join(self.ignored[:8]) + (f" and {len(self.ignored) - 8} more" if len(self.ignored) > 8 else "")
            warnings.warn(f"{d / 'model.pt'}: ignored {len(self.ignored)} entries that are not weights of the "
                          f"model (as FunASR's loader does): {shown}", CheckpointWarning, stacklevel=3)
        return weights

    def quantization(self, weights: Mapping) -> dict[str, dict]:
        """{module path: spec} of the modules stored quantized (mlx-audio form; {} otherwise)."""
        if self.form != checkpoint_mlx_audio.FORM:
            return {}
        try:
            return checkpoint_mlx_audio.quantization_of(self.raw_config, weights)
        except CheckpointError as e:
            raise CheckpointError(f"{self.directory}: {self.label}: {e}") from e


def _has_safetensors(d: Path) -> bool:
    from . import INDEX_NAME, SINGLE_NAME

    return (d / SINGLE_NAME).is_file() or (d / INDEX_NAME).is_file()


def open_checkpoint(directory) -> CheckpointForm:
    """Detect the form of ``directory`` and read its configuration (no weights are read)."""
    d = Path(directory)
    form = detect_form(d)
    if form in (OFFICIAL, PRECISION):
        cfg = ModelConfig.from_dir(d)
        return CheckpointForm(form, d, cfg, llm_dir(d, cfg.raw["config.yaml"]))
    mod = checkpoint_hf if form == checkpoint_hf.FORM else checkpoint_mlx_audio
    parts = mod.read_config(d)
    funasr_cfg, qwen_cfg = parts[0], parts[1]
    raw = parts[2] if len(parts) > 2 else _read_json(d / "config.json") or {}
    try:
        cfg = ModelConfig.from_dicts(funasr_cfg, qwen_cfg)
    except ConfigError as e:
        raise CheckpointError(f"{d}: {LABELS[form]}: {e}") from e
    tok = llm_dir(d, funasr_cfg)
    if not (tok / "tokenizer.json").is_file():
        raise CheckpointError(f"{d}: {LABELS[form]} without its tokenizer: {tok / 'tokenizer.json'} not found")
    return CheckpointForm(form, d, cfg, tok, raw_config=raw)
