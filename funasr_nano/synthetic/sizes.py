"""Model configurations in the official checkpoint's own formats.

Each preset is a pair: the dict that goes into ``config.yaml`` (FunASR/OmegaConf layout,
keys as in the released Fun-ASR-Nano-2512 file) and the dict that goes into
``Qwen3-0.6B/config.json`` (Hugging Face Qwen3 layout). The runtime never reads these
constants directly: it reads the files a checkpoint directory holds. Presets exist so the
synthetic-checkpoint writer and the reference harness produce the same files.
"""

from __future__ import annotations

import copy

QWEN3_SPECIAL_IDS = {"endoftext": 151643, "im_start": 151644, "im_end": 151645}


def _funasr_config(enc: dict, adaptor: dict) -> dict:
    return {
        "model": "FunASRNano",
        "model_conf": {"lsm_weight": 0.1, "length_normalized_loss": True},
        "audio_encoder": "SenseVoiceEncoderSmall",
        "audio_encoder_conf": {
            "output_size": enc["output_size"],
            "attention_heads": enc["attention_heads"],
            "linear_units": enc["linear_units"],
            "num_blocks": enc["num_blocks"],
            "tp_blocks": enc["tp_blocks"],
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": enc["kernel_size"],
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
            "feat_permute": True,
            "freeze": True,
        },
        "audio_adaptor": "Transformer",
        "audio_adaptor_conf": {
            "downsample_rate": 1,
            "use_low_frame_rate": True,
            "ffn_dim": adaptor["ffn_dim"],
            "llm_dim": adaptor["llm_dim"],
            "encoder_dim": enc["output_size"],
            "n_layer": adaptor["n_layer"],
            "freeze": True,
        },
        "llm": "Qwen3-0.6b",
        "llm_conf": {
            "hub": "hf",
            "freeze": True,
            "llm_dtype": "bf16",
            "init_param_path": "Qwen3-0.6B",
            "use_lora": False,
        },
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
            "cmvn_file": None,
        },
        "tokenizer": "HuggingfaceTokenizer",
        "tokenizer_conf": {"init_param_path": "Qwen3-0.6B"},
        "dataset_conf": {
            "prompt_classes": "MultiContextPrompt",
            "ctc_tokenizer": "SenseVoiceTokenizer",
            "ctc_tokenizer_conf": {"vocab_path": None, "is_multilingual": True, "num_languages": 8749},
        },
    }


def _qwen3_config(hidden: int, layers: int, heads: int, kv_heads: int, head_dim: int, ffn: int) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": QWEN3_SPECIAL_IDS["endoftext"],
        "eos_token_id": QWEN3_SPECIAL_IDS["im_end"],
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": ffn,
        "max_position_embeddings": 40960,
        "max_window_layers": layers,
        "model_type": "qwen3",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    }


PRESETS = {
    # The released Fun-ASR-Nano-2512 shapes.
    "real": (
        _funasr_config(
            {"output_size": 512, "attention_heads": 4, "linear_units": 2048, "num_blocks": 50,
             "tp_blocks": 20, "kernel_size": 11},
            {"ffn_dim": 2048, "llm_dim": 1024, "n_layer": 2},
        ),
        _qwen3_config(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, ffn=3072),
    ),
    # Same structure, every width and depth shrunk: for fast tests. The vocabulary stays
    # real-sized so the real tokenizer's ids (151643..151668) are valid.
    "tiny": (
        _funasr_config(
            {"output_size": 64, "attention_heads": 4, "linear_units": 128, "num_blocks": 3,
             "tp_blocks": 2, "kernel_size": 11},
            {"ffn_dim": 128, "llm_dim": 64, "n_layer": 2},
        ),
        _qwen3_config(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=32, ffn=128),
    ),
}


def get_preset(name: str) -> tuple[dict, dict]:
    """Return deep copies of (config.yaml dict, Qwen3 config.json dict) for a preset name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    funasr_cfg, qwen_cfg = PRESETS[name]
    return copy.deepcopy(funasr_cfg), copy.deepcopy(qwen_cfg)
