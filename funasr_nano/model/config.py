"""Configuration dataclasses, built from the files a checkpoint directory holds.

`config.yaml` (FunASR layout) describes the frontend, the audio encoder and the adaptor;
`Qwen3-0.6B/config.json` (Hugging Face layout) describes the decoder. Nothing here hard-codes
the released model's sizes: they come from those two files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    pass


def _require(section: dict, key: str, where: str):
    if key not in section:
        raise ConfigError(f"{where}: missing required key {key!r}")
    return section[key]


@dataclass(frozen=True)
class FrontendConfig:
    fs: int = 16000
    n_mels: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    lfr_m: int = 7
    lfr_n: int = 6
    window: str = "hamming"
    dither: float = 0.0  # the reference defaults to 1.0 (random); 0 keeps results deterministic

    @classmethod
    def from_dict(cls, d: dict) -> "FrontendConfig":
        window = d.get("window", "hamming")
        if window != "hamming":
            raise ConfigError(f"frontend_conf.window={window!r}: only 'hamming' is implemented")
        if d.get("cmvn_file"):
            raise ConfigError("frontend_conf.cmvn_file is set, but Fun-ASR-Nano uses no CMVN; "
                              "this checkpoint is not a Fun-ASR-Nano model")
        return cls(
            fs=int(d.get("fs", 16000)),
            n_mels=int(d.get("n_mels", 80)),
            frame_length_ms=float(d.get("frame_length", 25)),
            frame_shift_ms=float(d.get("frame_shift", 10)),
            lfr_m=int(d.get("lfr_m", 7)),
            lfr_n=int(d.get("lfr_n", 6)),
            window=window,
        )

    @property
    def feature_dim(self) -> int:
        return self.n_mels * self.lfr_m


@dataclass(frozen=True)
class EncoderConfig:
    input_size: int
    output_size: int
    attention_heads: int
    linear_units: int
    num_blocks: int
    tp_blocks: int
    kernel_size: int
    sanm_shift: int = 0

    @classmethod
    def from_dict(cls, d: dict, input_size: int) -> "EncoderConfig":
        w = "config.yaml audio_encoder_conf"
        if d.get("selfattention_layer_type", "sanm") != "sanm":
            raise ConfigError(f"{w}: only selfattention_layer_type 'sanm' is implemented")
        if not d.get("normalize_before", True):
            raise ConfigError(f"{w}: only normalize_before=true is implemented")
        return cls(
            input_size=input_size,
            output_size=int(_require(d, "output_size", w)),
            attention_heads=int(_require(d, "attention_heads", w)),
            linear_units=int(_require(d, "linear_units", w)),
            num_blocks=int(_require(d, "num_blocks", w)),
            tp_blocks=int(d.get("tp_blocks", 0)),
            kernel_size=int(d.get("kernel_size", 11)),
            sanm_shift=int(d.get("sanm_shfit", 0)),  # sic: the reference's spelling
        )


@dataclass(frozen=True)
class AdaptorConfig:
    encoder_dim: int
    llm_dim: int
    ffn_dim: int
    n_layer: int
    downsample_rate: int = 1
    attention_heads: int = 8
    use_low_frame_rate: bool = True

    @classmethod
    def from_dict(cls, d: dict, encoder_dim: int, llm_dim: int) -> "AdaptorConfig":
        # Like the reference, encoder_dim and llm_dim come from the neighbouring modules,
        # not from the adaptor's own section.
        return cls(
            encoder_dim=encoder_dim,
            llm_dim=llm_dim,
            ffn_dim=int(d.get("ffn_dim", 2048)),
            n_layer=int(d.get("n_layer", 2)),
            downsample_rate=int(d.get("downsample_rate", 2)),
            attention_heads=int(d.get("attention_heads", 8)),
            use_low_frame_rate=bool(d.get("use_low_frame_rate", False)),
        )


@dataclass(frozen=True)
class Qwen3Config:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    eos_token_ids: tuple = ()

    @classmethod
    def from_dict(cls, d: dict) -> "Qwen3Config":
        w = "Qwen3-0.6B/config.json"
        if d.get("model_type", "qwen3") != "qwen3":
            raise ConfigError(f"{w}: model_type {d.get('model_type')!r} is not 'qwen3'")
        if d.get("rope_scaling"):
            raise ConfigError(f"{w}: rope_scaling is not supported")
        heads = int(_require(d, "num_attention_heads", w))
        hidden = int(_require(d, "hidden_size", w))
        eos = d.get("eos_token_id", [])
        eos = tuple(eos) if isinstance(eos, (list, tuple)) else (eos,) if eos is not None else ()
        rope_theta = d.get("rope_theta")
        if rope_theta is None:  # newer transformers nest it under rope_parameters
            rope_theta = (d.get("rope_parameters") or {}).get("rope_theta", 1e6)
        return cls(
            hidden_size=hidden,
            num_hidden_layers=int(_require(d, "num_hidden_layers", w)),
            num_attention_heads=heads,
            num_key_value_heads=int(d.get("num_key_value_heads", heads)),
            head_dim=int(d.get("head_dim") or hidden // heads),
            intermediate_size=int(_require(d, "intermediate_size", w)),
            vocab_size=int(_require(d, "vocab_size", w)),
            rope_theta=float(rope_theta),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            eos_token_ids=tuple(int(e) for e in eos),
        )


@dataclass(frozen=True)
class ModelConfig:
    frontend: FrontendConfig
    encoder: EncoderConfig
    adaptor: AdaptorConfig
    llm: Qwen3Config
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dicts(cls, funasr_cfg: dict, qwen_cfg: dict) -> "ModelConfig":
        model_name = funasr_cfg.get("model")
        if model_name not in (None, "FunASRNano"):
            raise ConfigError(f"config.yaml: model is {model_name!r}, expected 'FunASRNano'")
        enc_name = funasr_cfg.get("audio_encoder", "SenseVoiceEncoderSmall")
        if enc_name != "SenseVoiceEncoderSmall":
            raise ConfigError(f"config.yaml: audio_encoder {enc_name!r} is not supported")
        ad_name = funasr_cfg.get("audio_adaptor", "Transformer")
        if ad_name != "Transformer":
            raise ConfigError(f"config.yaml: audio_adaptor {ad_name!r} is not supported")
        frontend = FrontendConfig.from_dict(funasr_cfg.get("frontend_conf") or {})
        encoder = EncoderConfig.from_dict(funasr_cfg.get("audio_encoder_conf") or {}, frontend.feature_dim)
        llm = Qwen3Config.from_dict(qwen_cfg)
        adaptor = AdaptorConfig.from_dict(
            funasr_cfg.get("audio_adaptor_conf") or {}, encoder.output_size, llm.hidden_size
        )
        return cls(frontend, encoder, adaptor, llm, raw={"config.yaml": funasr_cfg, "config.json": qwen_cfg})

    @classmethod
    def from_dir(cls, ckpt_dir: str | Path) -> "ModelConfig":
        ckpt_dir = Path(ckpt_dir)
        yaml_path = ckpt_dir / "config.yaml"
        if not yaml_path.is_file():
            raise ConfigError(f"{yaml_path} not found: a Fun-ASR-Nano checkpoint directory holds config.yaml")
        try:
            with open(yaml_path, encoding="utf-8") as f:
                funasr_cfg = yaml.safe_load(f) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{yaml_path} is not valid YAML: {e}") from e
        if not isinstance(funasr_cfg, dict):
            raise ConfigError(f"{yaml_path}: expected a mapping at the top level")
        qwen_path = llm_dir(ckpt_dir, funasr_cfg) / "config.json"
        if not qwen_path.is_file():
            raise ConfigError(f"{qwen_path} not found: the Qwen3 config is needed to build the decoder")
        try:
            with open(qwen_path, encoding="utf-8") as f:
                qwen_cfg = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{qwen_path} is not valid JSON: {e}") from e
        return cls.from_dicts(funasr_cfg, qwen_cfg)


def llm_dir(ckpt_dir: Path, funasr_cfg: dict) -> Path:
    """The Qwen3 config/tokenizer directory, as `llm_conf.init_param_path` names it."""
    rel = (funasr_cfg.get("llm_conf") or {}).get("init_param_path") or "Qwen3-0.6B"
    p = Path(rel)
    if p.is_absolute() and p.is_dir():
        return p
    return Path(ckpt_dir) / p.name if not (Path(ckpt_dir) / p).is_dir() else Path(ckpt_dir) / p
