"""The mlx-audio form (``mlx-community/Fun-ASR-Nano-2512`` and its ``-fp16``/``-8bit``/``-4bit``).

Written by ``mlx_audio/stt/models/fun_asr_nano/convert.py`` (PyPI ``mlx-audio`` 0.6.2): one
``model.safetensors`` with the official key names (``module.`` prefixes and the tied
``llm.lm_head.weight`` dropped, FSMN taps stored as ``[C, K, 1]`` instead of ``[C, 1, K]``), a
``config.json`` of its own (``model_type: fun_asr_nano`` with ``frontend_conf``,
``audio_encoder_conf``, ``audio_adaptor_conf`` in the official YAML names, ``text_config`` = the
Qwen3 config) and the ``Qwen3-0.6B/`` tokenizer directory. Its quantized variants come from
``mlx_audio.convert --quantize`` on that output: ``llm.model.*`` Linear/Embedding modules whose
input width divides the group size become MLX affine-quantized (``weight``/``scales``/``biases``),
and config.json gains ``quantization: {group_size, bits, mode}`` (plus per-module entries for
mixed recipes).

mlx-audio's converter writes the released model's encoder and adaptor sizes whatever the source
(its ``RUNTIME_CONFIG``); the loader checks them against the weights' shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

FORM = "mlx-audio"
LABEL = "mlx-audio (mlx-community) checkpoint"


def _error(msg: str):
    from . import CheckpointError

    return CheckpointError(msg)


def is_mlx_audio_config(cfg: Mapping) -> bool:
    return cfg.get("model_type") == "fun_asr_nano" and "audio_encoder_conf" in cfg and "audio_config" not in cfg


def read_config(d: Path) -> tuple[dict, dict, dict]:
    """(config.yaml-style dict, Qwen3 config dict, raw config.json)."""
    p = d / "config.json"
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _error(f"{p}: unreadable config.json ({e})") from e
    text = cfg.get("text_config") or cfg.get("llm_config")
    missing = [k for k in ("audio_encoder_conf", "audio_adaptor_conf") if not isinstance(cfg.get(k), dict)]
    if not isinstance(text, dict):
        missing.append("text_config")
    if missing:
        raise _error(f"{p}: {LABEL} config.json lacks {missing}")
    enc = dict(cfg["audio_encoder_conf"])
    if "sanm_shift" in enc and "sanm_shfit" not in enc:
        enc["sanm_shfit"] = enc["sanm_shift"]
    funasr = {
        "model": "FunASRNano",
        "audio_encoder_conf": enc,
        "audio_adaptor_conf": dict(cfg["audio_adaptor_conf"]),
        "frontend_conf": dict(cfg.get("frontend_conf") or {}),
        "llm_conf": {"init_param_path": cfg.get("qwen_tokenizer_path", "Qwen3-0.6B")},
    }
    fe = funasr["frontend_conf"]
    if "input_size" in cfg and int(cfg["input_size"]) != int(fe.get("n_mels", 80)) * int(fe.get("lfr_m", 7)):
        raise _error(f"{p}: input_size {cfg['input_size']} != n_mels x lfr_m of frontend_conf")
    qwen = dict(text)
    qwen.setdefault("model_type", "qwen3")
    return funasr, qwen, cfg


def quantization_of(cfg: Mapping, weights: Mapping) -> dict[str, dict]:
    """{module path: {bits, group_size, mode, type}} for the modules stored quantized."""
    q = cfg.get("quantization") or cfg.get("quantization_config")
    paths = sorted(k[: -len(".scales")] for k in weights if k.endswith(".scales"))
    if not paths:
        if q:
            raise _error(f"config.json has a quantization block {q} but no tensor is stored quantized")
        return {}
    if not isinstance(q, dict):
        raise _error(f"{len(paths)} modules are stored quantized (e.g. {paths[0]}) but config.json has no "
                     "'quantization' block giving their bits and group size")
    out = {}
    for p in paths:
        spec = q.get(p) if isinstance(q.get(p), dict) else q
        if "bits" not in spec or "group_size" not in spec:
            raise _error(f"config.json quantization block lacks bits/group_size for {p}: {spec}")
        out[p] = {"bits": int(spec["bits"]), "group_size": int(spec["group_size"]),
                  "mode": spec.get("mode", "affine"),
                  "type": "embedding" if p.endswith("embed_tokens") else "linear"}
    return out


def to_official(weights: Mapping) -> dict:
    """mlx-audio tensors -> official key names and layout (FSMN taps back to [C, 1, K])."""
    out = {}
    for k, v in weights.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k.endswith("fsmn_block.weight") and v.ndim == 3 and v.shape[2] == 1 and v.shape[1] != 1:
            v = v.transpose(0, 2, 1)
        out[k] = v
    return out


def load_weights(d: Path) -> dict:
    from . import INDEX_NAME, SINGLE_NAME
    from .cache import load_safetensors_dir

    if not ((d / SINGLE_NAME).is_file() or (d / INDEX_NAME).is_file()):
        raise _error(f"{d}: {LABEL} without weights: no {SINGLE_NAME} or {INDEX_NAME}")
    return to_official(load_safetensors_dir(d))
