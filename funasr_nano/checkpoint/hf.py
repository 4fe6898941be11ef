"""The Transformers form (``FunAudioLLM/Fun-ASR-Nano-2512-hf``): keys and configuration.

A directory with ``config.json`` (``model_type: fun_asr_nano``, sub-configs ``audio_config``,
``adaptor_config``, ``text_config``), safetensors weights in the layout of Transformers'
``FunAsrNanoForConditionalGeneration`` (``transformers/models/fun_asr_nano/modeling_fun_asr_nano.py``,
>= 5.17), ``preprocessor_config.json`` and the Qwen3 tokenizer files at the top level.

Layout differences from the official ``model.pt`` (both directions are implemented here):

* the encoder's 70 layers are one list ``model.audio_tower.layers.N`` (official: ``encoders0.0``,
  ``encoders.0..48``, ``tp_encoders.0..19``); ``after_norm`` and ``tp_norm`` are the
  ``final_layernorm`` of layers 49 and 69;
* the fused SAN-M projection ``linear_q_k_v`` is split into ``q_proj``/``k_proj``/``v_proj``
  (rows 0:d, d:2d, 2d:3d), ``linear_out`` is ``o_proj``, ``fsmn_block`` is ``fsmn.conv``;
  ``norm1``/``norm2`` are ``input_layernorm``/``post_attention_layernorm``, ``feed_forward.w_1/w_2``
  are ``mlp.fc1/fc2``;
* the adaptor is ``model.multi_modal_projector`` (``linear_1``, ``linear_2``, ``layers.N``);
* the decoder is ``model.language_model.*``; the tied ``lm_head.weight`` is not stored.

Reading maps keys lazily (``mx.load`` plus one concatenation per encoder layer), so no cache is
written. This port keeps the official model's numerics where Transformers' configuration
could say otherwise: the adaptor's LayerNorm eps is the official 1e-12 (Transformers' config
default is 1e-5), and the prompt holds the official ceil(T/8) audio tokens (Transformers'
processor inserts one per LFR frame).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

FORM = "transformers"
LABEL = "Transformers (-hf) checkpoint"

_ENC = "model.audio_tower.layers."
_PROJ = "model.multi_modal_projector."
_LM = "model.language_model."

# official component name -> Transformers name, inside one encoder layer / adaptor block
_LAYER_PARTS = (
    ("norm1.", "input_layernorm."),
    ("norm2.", "post_attention_layernorm."),
    ("feed_forward.w_1.", "mlp.fc1."),
    ("feed_forward.w_2.", "mlp.fc2."),
    ("self_attn.linear_out.", "self_attn.o_proj."),
    ("self_attn.fsmn_block.", "self_attn.fsmn.conv."),
    ("self_attn.linear_q.", "self_attn.q_proj."),
    ("self_attn.linear_k.", "self_attn.k_proj."),
    ("self_attn.linear_v.", "self_attn.v_proj."),
)
_QKV = "self_attn.linear_q_k_v."


def is_hf_config(cfg: Mapping) -> bool:
    return cfg.get("model_type") == "fun_asr_nano" and "audio_config" in cfg


def _error(msg: str):
    from . import CheckpointError

    return CheckpointError(msg)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


def funasr_config_from_hf(hf: Mapping, preprocessor: Mapping | None = None, where: str = "config.json") -> tuple[dict, dict]:
    """(config.yaml-style dict, Qwen3 config dict) for an ``-hf`` config.json (+ preprocessor_config.json)."""
    a, ad, text = hf.get("audio_config"), hf.get("adaptor_config") or {}, hf.get("text_config")
    if not isinstance(a, dict) or not isinstance(text, dict):
        raise _error(f"{where}: a {LABEL} needs 'audio_config' and 'text_config' sections")
    for sec, name, key in ((a, "audio_config", "hidden_act"), (ad, "adaptor_config", "hidden_act"),
                           (ad, "adaptor_config", "projector_hidden_act")):
        if sec.get(key, "relu") != "relu":
            raise _error(f"{where}: {name}.{key}={sec[key]!r}; Fun-ASR-Nano uses 'relu'")
    d_llm = int(text.get("hidden_size", 1024))
    if int(ad.get("hidden_size", d_llm)) != d_llm:
        raise _error(f"{where}: adaptor_config.hidden_size {ad['hidden_size']} != text_config.hidden_size {d_llm}")
    if int(ad.get("intermediate_size", d_llm // 4)) != d_llm // 4:
        raise _error(f"{where}: adaptor_config.intermediate_size {ad['intermediate_size']} is not "
                     f"text_config.hidden_size // 4 = {d_llm // 4} (the official adaptor block's FFN width)")
    n_layers = int(a.get("num_hidden_layers", 70))
    tp = int(a.get("num_timestamp_prediction_layers", 20))
    pre = dict(preprocessor or {})
    n_mels = int(a.get("num_mel_bins", pre.get("feature_size", 80)))
    lfr_m = int(a.get("num_stacked_frames", pre.get("num_frames_lfr", 7)))
    funasr = {
        "model": "FunASRNano",
        "audio_encoder": "SenseVoiceEncoderSmall",
        "audio_encoder_conf": {
            "output_size": int(a.get("hidden_size", 512)),
            "attention_heads": int(a.get("num_attention_heads", 4)),
            "linear_units": int(a.get("intermediate_size", 2048)),
            "num_blocks": n_layers - tp,
            "tp_blocks": tp,
            "kernel_size": int(a.get("fsmn_kernel_size", 11)),
            "sanm_shfit": 0,
            "normalize_before": True,
            "selfattention_layer_type": "sanm",
        },
        "audio_adaptor": "Transformer",
        "audio_adaptor_conf": {
            "downsample_rate": 1,
            "use_low_frame_rate": True,
            "ffn_dim": int(ad.get("projector_hidden_size", 2048)),
            "n_layer": int(ad.get("num_hidden_layers", 2)),
            "attention_heads": int(ad.get("num_attention_heads", 8)),
        },
        "llm_conf": {"init_param_path": "."},  # tokenizer files sit beside config.json
        "frontend_conf": {
            "fs": int(pre.get("sampling_rate", 16000)),
            "window": pre.get("window", "hamming"),
            "n_mels": n_mels,
            "frame_length": pre.get("frame_length", 25),
            "frame_shift": pre.get("frame_shift", 10),
            "lfr_m": lfr_m,
            "lfr_n": int(pre.get("stride_lfr", 6)),
            "cmvn_file": None,
        },
    }
    qwen = dict(text)
    qwen.setdefault("model_type", "qwen3")
    if "tie_word_embeddings" in hf and "tie_word_embeddings" not in text:
        qwen["tie_word_embeddings"] = bool(hf["tie_word_embeddings"])
    return funasr, qwen


def hf_config_from_funasr(funasr_cfg: Mapping, qwen_cfg: Mapping) -> dict:
    """The ``-hf`` config.json (``FunAsrNanoConfig`` fields) of an official configuration."""
    enc = funasr_cfg["audio_encoder_conf"]
    ad = funasr_cfg.get("audio_adaptor_conf") or {}
    fe = funasr_cfg.get("frontend_conf") or {}
    d_llm = int(qwen_cfg["hidden_size"])
    text = {k: v for k, v in qwen_cfg.items() if k not in ("architectures", "torch_dtype")}
    return {
        "model_type": "fun_asr_nano",
        "architectures": ["FunAsrNanoForConditionalGeneration"],
        "audio_config": {
            "model_type": "fun_asr_nano_encoder",
            "num_mel_bins": int(fe.get("n_mels", 80)),
            "num_stacked_frames": int(fe.get("lfr_m", 7)),
            "hidden_size": int(enc["output_size"]),
            "num_attention_heads": int(enc["attention_heads"]),
            "intermediate_size": int(enc["linear_units"]),
            "num_hidden_layers": int(enc["num_blocks"]) + int(enc.get("tp_blocks", 0)),
            "num_timestamp_prediction_layers": int(enc.get("tp_blocks", 0)),
            "fsmn_kernel_size": int(enc.get("kernel_size", 11)),
            "layer_norm_eps": 1e-5,
        },
        "adaptor_config": {
            "hidden_size": d_llm,
            "num_attention_heads": int(ad.get("attention_heads", 8)),
            "intermediate_size": d_llm // 4,
            "num_hidden_layers": int(ad.get("n_layer", 2)),
            "projector_hidden_size": int(ad.get("ffn_dim", 2048)),
            "layer_norm_eps": 1e-12,  # funasr.models.transformer.layer_norm.LayerNorm
        },
        "text_config": text,
        "tie_word_embeddings": bool(qwen_cfg.get("tie_word_embeddings", True)),
    }


# --------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------


def _enc_index(key: str, n_blocks: int) -> tuple[int, str] | None:
    """official encoder key -> (Transformers layer index, rest of the key)."""
    p = "audio_encoder."
    if key.startswith(p + "encoders0.0."):
        return 0, key[len(p + "encoders0.0."):]
    m = re.match(r"audio_encoder\.(encoders|tp_encoders)\.(\d+)\.(.*)$", key)
    if m:
        i = int(m.group(2))
        return (i + 1 if m.group(1) == "encoders" else n_blocks + i), m.group(3)
    return None


def _rename_part(rest: str, forward: bool) -> str:
    for a, b in _LAYER_PARTS:
        src, dst = (a, b) if forward else (b, a)
        if rest.startswith(src):
            return dst + rest[len(src):]
    return rest


def hf_keys_of(key: str, n_blocks: int, tp_blocks: int) -> list[str]:
    """The Transformers key(s) holding an official key (three for a fused q/k/v tensor)."""
    if key.startswith("llm.model."):
        return [_LM + key[len("llm.model."):]]
    if key == "llm.lm_head.weight":
        return ["lm_head.weight"]
    if key.startswith("audio_encoder.after_norm."):
        return [f"{_ENC}{n_blocks - 1}.final_layernorm.{key.rsplit('.', 1)[1]}"]
    if key.startswith("audio_encoder.tp_norm."):
        return [f"{_ENC}{n_blocks + tp_blocks - 1}.final_layernorm.{key.rsplit('.', 1)[1]}"]
    e = _enc_index(key, n_blocks)
    if e is not None:
        i, rest = e
        if rest.startswith(_QKV):
            leaf = rest[len(_QKV):]
            return [f"{_ENC}{i}.self_attn.{p}_proj.{leaf}" for p in "qkv"]
        return [f"{_ENC}{i}.{_rename_part(rest, True)}"]
    for a, b in (("audio_adaptor.linear1.", "linear_1."), ("audio_adaptor.linear2.", "linear_2.")):
        if key.startswith(a):
            return [_PROJ + b + key[len(a):]]
    m = re.match(r"audio_adaptor\.blocks\.(\d+)\.(.*)$", key)
    if m:
        return [f"{_PROJ}layers.{m.group(1)}.{_rename_part(m.group(2), True)}"]
    raise _error(f"no Transformers name for the official key {key!r}")


def official_key_of(hf_key: str, n_blocks: int, tp_blocks: int) -> tuple[str, int | None] | None:
    """(official key, q/k/v slot 0-2 or None) for a Transformers key; None when it has none."""
    if hf_key.startswith(_LM):
        return "llm.model." + hf_key[len(_LM):], None
    if hf_key == "lm_head.weight":
        return "llm.lm_head.weight", None
    m = re.match(re.escape(_ENC) + r"(\d+)\.(.*)$", hf_key)
    if m:
        i, rest = int(m.group(1)), m.group(2)
        if rest.startswith("final_layernorm."):
            leaf = rest[len("final_layernorm."):]
            if i == n_blocks - 1:
                return "audio_encoder.after_norm." + leaf, None
            if i == n_blocks + tp_blocks - 1:
                return "audio_encoder.tp_norm." + leaf, None
            return None
        if i == 0:
            prefix = "audio_encoder.encoders0.0."
        elif i < n_blocks:
            prefix = f"audio_encoder.encoders.{i - 1}."
        elif i < n_blocks + tp_blocks:
            prefix = f"audio_encoder.tp_encoders.{i - n_blocks}."
        else:
            return None
        q = re.match(r"self_attn\.([qkv])_proj\.(.*)$", rest)
        if q:
            return prefix + _QKV + q.group(2), "qkv".index(q.group(1))
        return prefix + _rename_part(rest, False), None
    for a, b in (("linear_1.", "audio_adaptor.linear1."), ("linear_2.", "audio_adaptor.linear2.")):
        if hf_key.startswith(_PROJ + a):
            return b + hf_key[len(_PROJ + a):], None
    m = re.match(re.escape(_PROJ) + r"layers\.(\d+)\.(.*)$", hf_key)
    if m:
        return f"audio_adaptor.blocks.{m.group(1)}.{_rename_part(m.group(2), False)}", None
    return None


def to_hf_state_dict(weights: Mapping[str, Any], n_blocks: int, tp_blocks: int, drop_tied_head: bool = True) -> dict:
    """Official ``{key: tensor}`` -> Transformers ``{key: tensor}`` (any array type that slices rows)."""
    out = {}
    for k, v in weights.items():
        if k.startswith(("ctc.", "ctc_decoder.")) or (drop_tied_head and k == "llm.lm_head.weight"):
            continue
        names = hf_keys_of(k, n_blocks, tp_blocks)
        if len(names) == 3:
            d = v.shape[0] // 3
            for j, n in enumerate(names):
                out[n] = v[j * d:(j + 1) * d]
        else:
            out[names[0]] = v
    return out


def from_hf_state_dict(weights: Mapping[str, Any], expected: Mapping[str, tuple], n_blocks: int,
                       tp_blocks: int, where: str) -> dict:
    """Transformers ``{key: mx.array}`` -> official keys, checking that every key the model needs
    is there. Errors name the form and the Transformers keys that are missing or unexpected."""
    import mlx.core as mx

    parts: dict[str, dict[int | None, Any]] = {}
    unexpected = []
    for k, v in weights.items():
        o = official_key_of(k, n_blocks, tp_blocks)
        if o is None or (o[0] not in expected and o[0] != "llm.lm_head.weight"):
            unexpected.append(k)
            continue
        parts.setdefault(o[0], {})[o[1]] = v
    need = {n for k in expected if k != "llm.lm_head.weight" for n in hf_keys_of(k, n_blocks, tp_blocks)}
    missing = sorted(need - set(weights))
    if missing or unexpected:
        from .resolve import _name_list

        msg = [f"{where}: {LABEL} does not match the model its config.json describes: "
               f"{len(missing)} missing, {len(unexpected)} unexpected keys"]
        if missing:
            msg.append(_name_list("missing", missing))
        if unexpected:
            msg.append(_name_list("unexpected", sorted(unexpected)))
        raise _error("\n".join(msg))
    out = {}
    for k, p in parts.items():
        out[k] = mx.concatenate([p[0], p[1], p[2]], axis=0) if None not in p else p[None]
    return out


# --------------------------------------------------------------------------------------------
# directory
# --------------------------------------------------------------------------------------------


def read_config(d: Path) -> tuple[dict, dict]:
    cfg_path = d / "config.json"
    try:
        hf = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _error(f"{cfg_path}: unreadable config.json ({e})") from e
    pre = None
    if (d / "preprocessor_config.json").is_file():
        try:
            pre = json.loads((d / "preprocessor_config.json").read_text(encoding="utf-8"))
        except ValueError as e:
            raise _error(f"{d / 'preprocessor_config.json'}: not valid JSON ({e})") from e
    return funasr_config_from_hf(hf, pre, str(cfg_path))


def load_weights(d: Path, expected: Mapping[str, tuple], funasr_cfg: Mapping) -> dict:
    from . import INDEX_NAME, SINGLE_NAME
    from .cache import load_safetensors_dir

    if not ((d / SINGLE_NAME).is_file() or (d / INDEX_NAME).is_file()):
        raise _error(f"{d}: {LABEL} without weights: no {SINGLE_NAME} or {INDEX_NAME}")
    enc = funasr_cfg["audio_encoder_conf"]
    return from_hf_state_dict(load_safetensors_dir(d), expected, int(enc["num_blocks"]),
                              int(enc["tp_blocks"]), f"{d}")


def write_hf_checkpoint(official_dir, out_dir, dtype: str = "bfloat16") -> Path:
    """Write the ``-hf`` form of an official checkpoint directory with Transformers' own classes
    (``FunAsrNanoForConditionalGeneration.save_pretrained``, feature extractor, tokenizer).

    Needs torch and transformers >= 5.17 (test and tool use only; loading never does).
    """
    import torch
    from transformers import (
        AutoTokenizer,
        FunAsrNanoConfig,
        FunAsrNanoForConditionalGeneration,
    )

    from ..model.config import ModelConfig, llm_dir
    from .state_dict import extract_state_dict

    src, out = Path(official_dir), Path(out_dir)
    cfg = ModelConfig.from_dir(src)
    funasr_cfg, qwen_cfg = cfg.raw["config.yaml"], cfg.raw["config.json"]
    hf_cfg = FunAsrNanoConfig(**hf_config_from_funasr(funasr_cfg, qwen_cfg))
    tdtype = getattr(torch, dtype)
    # mmap: the tensors stay in the page cache instead of the process (1.9 GB for the released model)
    obj = torch.load(src / "model.pt", map_location="cpu", mmap=True, weights_only=True)
    weights, _ = extract_state_dict(obj, str(src / "model.pt"), lambda v: isinstance(v, torch.Tensor))
    sd = to_hf_state_dict(weights, cfg.encoder.num_blocks, cfg.encoder.tp_blocks, drop_tied_head=False)
    del weights, obj
    with torch.device("meta"):
        model = FunAsrNanoForConditionalGeneration(hf_cfg)
    sd = {k: v.to(tdtype) for k, v in sd.items()}
    # the mapped names must be exactly the model's (the tied head aside); assign keeps the tensors as given
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if k != "lm_head.weight" and "positional_embedding" not in k]
    if missing or unexpected:
        raise _error(f"mapping to Transformers' FunAsrNanoForConditionalGeneration failed: missing {missing[:5]}, "
                     f"unexpected {unexpected[:5]}")
    model.tie_weights()
    enc = model.model.audio_tower
    enc.position_embeddings.positional_embedding = enc.position_embeddings.compute_default_singular_positional_embedding()
    model.config.dtype = dtype
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fe = funasr_cfg.get("frontend_conf") or {}
    # The fields of FunAsrNanoFeatureExtractor (its class needs torchaudio, which nothing else here does).
    pre = {"feature_extractor_type": "FunAsrNanoFeatureExtractor", "processor_class": "FunAsrNanoProcessor",
           "feature_size": int(fe.get("n_mels", 80)), "sampling_rate": int(fe.get("fs", 16000)),
           "frame_length": fe.get("frame_length", 25), "frame_shift": fe.get("frame_shift", 10),
           "num_frames_lfr": int(fe.get("lfr_m", 7)), "stride_lfr": int(fe.get("lfr_n", 6)),
           "window": fe.get("window", "hamming"), "padding_value": 0.0, "padding_side": "right",
           "return_attention_mask": True}
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n", encoding="utf-8")
    AutoTokenizer.from_pretrained(str(llm_dir(src, funasr_cfg))).save_pretrained(out)
    from . import SYNTHETIC_MARKER as MARKER

    if (src / MARKER).is_file():  # synthetic weights stay labelled as such in every form
        (out / MARKER).write_text((src / MARKER).read_text(encoding="utf-8")
                                  + "converted: funasr_nano.checkpoint.hf.write_hf_checkpoint\n", encoding="utf-8")
    return out
