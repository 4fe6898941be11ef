"""Write one peer's checkpoint form from an official ``model.pt`` directory (run in the peer's python).

    <peer python> tools/peerkit/forms.py FORM SRC_DIR DST_DIR

FORM is one of:

* ``hf``: the Transformers ``-hf`` layout (``FunAsrNanoForConditionalGeneration``: config.json +
  safetensors + processor files). The installed transformers wheel ships no converter for this model
  (``convert_fun_asr_nano_to_hf.py`` lives only in the repository, and its versions there target other
  key layouts than the installed modeling file), so the mapping is ours: official keys -> the installed
  model's keys, the fused SAN-M ``linear_q_k_v`` split into q/k/v, the 70 encoder layers numbered
  ``encoders0`` (1), ``encoders`` (num_blocks - 1), ``tp_encoders`` (tp_blocks), ``after_norm`` /
  ``tp_norm`` as the final norms of layers num_blocks - 1 and the last. Checked by ``load_state_dict
  (strict=True)`` (no missing or unexpected key) and, in the side-by-side, by the tokens.
* ``mlx_audio-<dtype>`` (bfloat16, float16, float32): mlx-audio's own converter
  (``mlx_audio.stt.models.fun_asr_nano.convert``).
* ``mlx_audio-q<bits>`` (4, 8): mlx-audio's generic ``mlx_audio.convert --quantize --q-bits`` on the
  bfloat16 form (its ``model_quant_predicate`` quantizes ``llm.model.*`` only), as the mlx-community
  ``-4bit``/``-8bit`` repos were made.
* ``funasr_mlx-fp16``: funasr-mlx's own converter (``funasr_mlx.checkpoints.convert_checkpoint``, what
  ``funasr-mlx convert`` calls, with the two settings its CLI lacks; see write_funasr_mlx).
* ``funasr_mlx-w4a16``: the same converter with its W4A16 quantization section (4 bits, group 64, RTN,
  the decoder's linear layers: ``llm.model``), which its CLI does not expose.
* ``crispasr-<f32|f16>``: a GGUF for crispasr's Fun-ASR backend, written by our writer (the PyPI
  ``gguf`` library) because CrispASR's converter is not published with its wheel; see write_crispasr.

mlx-audio's converter writes a hard-coded real-shape runtime config; for the small test shapes the
encoder/adaptor/frontend sections are replaced by the checkpoint's own config.yaml values (a no-op for
the real shapes), so the same converter serves the tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml


def _cfg(src: Path) -> tuple[dict, dict]:
    with open(src / "config.yaml", encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    qwen = json.loads((src / "Qwen3-0.6B" / "config.json").read_text(encoding="utf-8"))
    return cfg, qwen


def _state_dict(src: Path) -> dict:
    import torch

    sd = torch.load(src / "model.pt", map_location="cpu", mmap=True, weights_only=True)
    for k in ("state_dict", "model_state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(k), dict):
            return sd[k]
    return sd


# ---------------------------------------------------------------------------------------------
# Transformers -hf form


def hf_key_map(cfg: dict) -> list[tuple[str, str]]:
    """(official prefix, HF prefix) for every block, and the block-internal renames."""
    enc = cfg["audio_encoder_conf"]
    nb, tp = int(enc["num_blocks"]), int(enc["tp_blocks"])
    blocks = [("audio_encoder.encoders0.0.", "model.audio_tower.layers.0.")]
    blocks += [(f"audio_encoder.encoders.{i}.", f"model.audio_tower.layers.{i + 1}.") for i in range(nb - 1)]
    blocks += [(f"audio_encoder.tp_encoders.{i}.", f"model.audio_tower.layers.{nb + i}.") for i in range(tp)]
    blocks += [(f"audio_adaptor.blocks.{i}.", f"model.multi_modal_projector.layers.{i}.")
               for i in range(int(cfg["audio_adaptor_conf"]["n_layer"]))]
    return blocks


_INNER = (
    ("norm1.", "input_layernorm."),
    ("norm2.", "post_attention_layernorm."),
    ("self_attn.linear_out.", "self_attn.o_proj."),
    ("self_attn.linear_q.", "self_attn.q_proj."),
    ("self_attn.linear_k.", "self_attn.k_proj."),
    ("self_attn.linear_v.", "self_attn.v_proj."),
    ("self_attn.fsmn_block.", "self_attn.fsmn.conv."),
    ("feed_forward.w_1.", "mlp.fc1."),
    ("feed_forward.w_2.", "mlp.fc2."),
)


def to_hf_state_dict(sd: dict, cfg: dict) -> dict:
    enc = cfg["audio_encoder_conf"]
    nb, tp = int(enc["num_blocks"]), int(enc["tp_blocks"])
    blocks = hf_key_map(cfg)
    out, unused = {}, []
    for key, value in sd.items():
        if not hasattr(value, "shape"):
            continue
        new = None
        if key.startswith("llm.model."):
            new = "model.language_model." + key[len("llm.model."):]
        elif key == "llm.lm_head.weight":
            new = "lm_head.weight"
        elif key.startswith("audio_adaptor.linear1."):
            new = "model.multi_modal_projector.linear_1." + key.rsplit(".", 1)[1]
        elif key.startswith("audio_adaptor.linear2."):
            new = "model.multi_modal_projector.linear_2." + key.rsplit(".", 1)[1]
        elif key.startswith("audio_encoder.after_norm."):
            new = f"model.audio_tower.layers.{nb - 1}.final_layernorm." + key.rsplit(".", 1)[1]
        elif key.startswith("audio_encoder.tp_norm."):
            new = f"model.audio_tower.layers.{nb + tp - 1}.final_layernorm." + key.rsplit(".", 1)[1]
        else:
            for a, b in blocks:
                if key.startswith(a):
                    rest = key[len(a):]
                    if rest.startswith("self_attn.linear_q_k_v."):
                        leaf = rest.rsplit(".", 1)[1]
                        for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                            out[f"{b}self_attn.{name}.{leaf}"] = part.contiguous()
                        new = ""
                        break
                    for x, y in _INNER:
                        if rest.startswith(x):
                            new = b + y + rest[len(x):]
                            break
                    break
        if new is None:
            unused.append(key)
        elif new:
            out[new] = value
    if unused:
        raise KeyError(f"hf form: no mapping for {len(unused)} official keys, e.g. {unused[:5]}")
    return out


def hf_config(cfg: dict, qwen: dict):
    from transformers import FunAsrNanoConfig

    enc, ad, fe = cfg["audio_encoder_conf"], cfg["audio_adaptor_conf"], cfg["frontend_conf"]
    return FunAsrNanoConfig(
        audio_config={"model_type": "fun_asr_nano_encoder", "num_mel_bins": int(fe["n_mels"]),
                      "num_stacked_frames": int(fe["lfr_m"]), "hidden_size": int(enc["output_size"]),
                      "num_attention_heads": int(enc["attention_heads"]), "intermediate_size": int(enc["linear_units"]),
                      "num_hidden_layers": int(enc["num_blocks"]) + int(enc["tp_blocks"]),
                      "num_timestamp_prediction_layers": int(enc["tp_blocks"]),
                      "fsmn_kernel_size": int(enc["kernel_size"])},
        adaptor_config={"hidden_size": int(ad["llm_dim"]), "intermediate_size": int(ad["llm_dim"]) // 4,
                        "num_hidden_layers": int(ad["n_layer"]), "num_attention_heads": int(ad.get("attention_heads", 8)),
                        "projector_hidden_size": int(ad["ffn_dim"])},
        text_config={**qwen, "model_type": "qwen3"},
    )


def write_hf(src: Path, dst: Path) -> None:
    import torch
    from transformers import (AutoTokenizer, FunAsrNanoFeatureExtractor, FunAsrNanoForConditionalGeneration,
                              FunAsrNanoProcessor)

    cfg, qwen = _cfg(src)
    config = hf_config(cfg, qwen)
    config.dtype = "bfloat16"
    sd = to_hf_state_dict(_state_dict(src), cfg)
    with torch.device("meta"):
        model = FunAsrNanoForConditionalGeneration(config)
    res = model.load_state_dict({k: v.to(torch.bfloat16) for k, v in sd.items()}, strict=True, assign=True)
    if res.missing_keys or res.unexpected_keys:
        raise KeyError(f"hf form: missing {res.missing_keys[:5]} unexpected {res.unexpected_keys[:5]}")
    model.tie_weights()
    model.save_pretrained(dst)
    tok = AutoTokenizer.from_pretrained(src / "Qwen3-0.6B")
    fe = cfg["frontend_conf"]
    proc = FunAsrNanoProcessor(FunAsrNanoFeatureExtractor(feature_size=int(fe["n_mels"]), num_frames_lfr=int(fe["lfr_m"]),
                                                          stride_lfr=int(fe["lfr_n"]), return_attention_mask=True), tok)
    proc.save_pretrained(dst)


# ---------------------------------------------------------------------------------------------
# mlx-audio


def _patch_mlx_audio_config(src: Path, dst: Path) -> None:
    cfg, qwen = _cfg(src)
    p = dst / "config.json"
    c = json.loads(p.read_text(encoding="utf-8"))
    c["audio_encoder_conf"].update({k: v for k, v in cfg["audio_encoder_conf"].items() if k in c["audio_encoder_conf"]})
    c["audio_encoder_conf"]["sanm_shift"] = cfg["audio_encoder_conf"].get("sanm_shfit", 0)
    ad = cfg["audio_adaptor_conf"]
    c["audio_adaptor_conf"].update({k: v for k, v in ad.items() if k in c["audio_adaptor_conf"]})
    c["frontend_conf"].update(cfg["frontend_conf"])
    c["input_size"] = int(cfg["frontend_conf"]["n_mels"]) * int(cfg["frontend_conf"]["lfr_m"])
    p.write_text(json.dumps(c, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_mlx_audio(src: Path, dst: Path, variant: str) -> None:
    py = sys.executable
    if variant in ("bfloat16", "float16", "float32"):
        subprocess.run([py, "-m", "mlx_audio.stt.models.fun_asr_nano.convert", "--hf-path", str(src),
                        "--mlx-path", str(dst), "--dtype", variant, "--no-examples"], check=True)
        _patch_mlx_audio_config(src, dst)
        return
    m = re.fullmatch(r"q(\d+)", variant)
    if not m:
        raise ValueError(f"mlx_audio form {variant!r}: choose bfloat16, float16, float32, q4 or q8")
    base = dst.parent / (dst.name + ".bf16-src")
    if base.exists():
        shutil.rmtree(base)
    write_mlx_audio(src, base, "bfloat16")
    try:
        subprocess.run([py, "-m", "mlx_audio.convert", "--hf-path", str(base), "--mlx-path", str(dst),
                        "--quantize", "--q-bits", m.group(1),
                        # the domain is named: detecting it imports every model module, and one of
                        # them (a codec) downloads from the hub at import time
                        "--model-domain", "stt"], check=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# funasr-mlx


def _funasr_mlx_config(src: Path) -> dict:
    cfg, qwen = _cfg(src)
    return {"audio_encoder_conf": cfg["audio_encoder_conf"], "audio_adaptor_conf": cfg["audio_adaptor_conf"],
            "input_size": int(cfg["frontend_conf"]["n_mels"]) * int(cfg["frontend_conf"]["lfr_m"]),
            "frontend_conf": cfg["frontend_conf"], "llm_conf": {"args": qwen}}


W4A16 = {"bits": 4, "group_size": 64, "mode": "affine", "method": "rtn", "targets": ["llm.model"]}


def write_funasr_mlx(src: Path, dst: Path, variant: str) -> None:
    # `funasr-mlx convert` (its CLI) refuses the official model.pt twice over: it keeps the tied
    # `llm.lm_head.weight`, which its own loader then rejects as unexpected, and the real embedding
    # (151936 x 1024, 622 MB as float32) exceeds its default 384 MB conversion buffer. Its Python
    # converter takes both settings: source_rule="fun-asr-nano" (drops the tied head) and
    # stream_large_tensors=True. W4A16 is applied by its safetensors-source path only, so the
    # quantized form is converted from the fp16 one, as its published w4a16 repos sit beside fp16.
    from funasr_mlx.checkpoints import convert_checkpoint

    config = _funasr_mlx_config(src)
    if variant == "fp16":
        convert_checkpoint(src / "model.pt", dst, model="fun-asr-nano", dtype="float16", config=config,
                           source_rule="fun-asr-nano", stream_large_tensors=True)
    elif variant == "w4a16":
        base = dst.parent / (dst.name + ".fp16-src")
        if base.exists():
            shutil.rmtree(base)
        write_funasr_mlx(src, base, "fp16")
        try:
            # source_rule "native": the source already has its layout (FSMN kernels transposed once)
            convert_checkpoint(base, dst, model="fun-asr-nano", dtype="float16", config=config,
                               quantization=W4A16, stream_large_tensors=True, source_rule="native")
        finally:
            shutil.rmtree(base, ignore_errors=True)
    else:
        raise ValueError(f"funasr_mlx form {variant!r}: choose fp16 or w4a16")
    # Its converter writes the config it was given but not the quantization section its loader
    # needs to rebuild the quantized layers (load_model -> apply_quantization(config["quantization"])).
    cfg_file = dst / "config.json"
    c = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.exists() else dict(config)
    if variant == "w4a16":
        c["quantization"] = W4A16
    cfg_file.write_text(json.dumps(c, ensure_ascii=False, indent=2), encoding="utf-8")
    for f in (src / "Qwen3-0.6B").iterdir():  # its transcriber reads the tokenizer from the checkpoint dir
        if f.is_file() and f.name != "config.json":
            shutil.copy2(f, dst / f.name)


# ---------------------------------------------------------------------------------------------
# crispasr (ggml): a GGUF writer of ours. CrispASR's own converter is not published with its wheel;
# the names and hyperparameters below are the ones its src/funasr.cpp reads. Unverified against a
# GGUF of theirs: tensors are written in PyTorch's row-major shapes (ggml sees them reversed, as
# llama.cpp's converters write them), q/k unpermuted (Qwen3 uses NeoX RoPE), FSMN kernels as stored.

_CRISP_BLOCK = (("norm1.weight", "norm1.w"), ("norm1.bias", "norm1.b"), ("norm2.weight", "norm2.w"),
                ("norm2.bias", "norm2.b"), ("self_attn.linear_q_k_v.weight", "attn.qkv.w"),
                ("self_attn.linear_q_k_v.bias", "attn.qkv.b"), ("self_attn.linear_out.weight", "attn.out.w"),
                ("self_attn.linear_out.bias", "attn.out.b"), ("self_attn.fsmn_block.weight", "attn.fsmn.w"),
                ("feed_forward.w_1.weight", "ffn.l1.w"), ("feed_forward.w_1.bias", "ffn.l1.b"),
                ("feed_forward.w_2.weight", "ffn.l2.w"), ("feed_forward.w_2.bias", "ffn.l2.b"))
_CRISP_ADAPTOR = (("norm1.weight", "norm1.w"), ("norm1.bias", "norm1.b"), ("norm2.weight", "norm2.w"),
                  ("norm2.bias", "norm2.b"), ("self_attn.linear_q.weight", "attn.q.w"),
                  ("self_attn.linear_q.bias", "attn.q.b"), ("self_attn.linear_k.weight", "attn.k.w"),
                  ("self_attn.linear_k.bias", "attn.k.b"), ("self_attn.linear_v.weight", "attn.v.w"),
                  ("self_attn.linear_v.bias", "attn.v.b"), ("self_attn.linear_out.weight", "attn.out.w"),
                  ("self_attn.linear_out.bias", "attn.out.b"), ("feed_forward.w_1.weight", "ffn.l1.w"),
                  ("feed_forward.w_1.bias", "ffn.l1.b"), ("feed_forward.w_2.weight", "ffn.l2.w"),
                  ("feed_forward.w_2.bias", "ffn.l2.b"))
_CRISP_LLM = (("input_layernorm.weight", "attn_norm.weight"), ("self_attn.q_proj.weight", "attn_q.weight"),
              ("self_attn.k_proj.weight", "attn_k.weight"), ("self_attn.v_proj.weight", "attn_v.weight"),
              ("self_attn.o_proj.weight", "attn_output.weight"), ("self_attn.q_norm.weight", "attn_q_norm.weight"),
              ("self_attn.k_norm.weight", "attn_k_norm.weight"), ("post_attention_layernorm.weight", "ffn_norm.weight"),
              ("mlp.gate_proj.weight", "ffn_gate.weight"), ("mlp.up_proj.weight", "ffn_up.weight"),
              ("mlp.down_proj.weight", "ffn_down.weight"))


def crispasr_tensors(sd: dict, cfg: dict, qwen: dict) -> dict:
    enc = cfg["audio_encoder_conf"]
    nb, tp = int(enc["num_blocks"]), int(enc["tp_blocks"])
    srcs = ["audio_encoder.encoders0.0."] + [f"audio_encoder.encoders.{i}." for i in range(nb - 1)]
    srcs += [f"audio_encoder.tp_encoders.{i}." for i in range(tp)]
    out = {}
    for i, pre in enumerate(srcs):
        for a, b in _CRISP_BLOCK:
            out[f"funasr.enc.blk.{i}.{b}"] = sd[pre + a]
    for a, b in (("after_norm.weight", "after_norm.w"), ("after_norm.bias", "after_norm.b"),
                 ("tp_norm.weight", "tp_norm.w"), ("tp_norm.bias", "tp_norm.b")):
        out[f"funasr.enc.{b}"] = sd["audio_encoder." + a]
    for a in ("linear1", "linear2"):
        out[f"funasr.adaptor.{a}.w"] = sd[f"audio_adaptor.{a}.weight"]
        out[f"funasr.adaptor.{a}.b"] = sd[f"audio_adaptor.{a}.bias"]
    for i in range(int(cfg["audio_adaptor_conf"]["n_layer"])):
        for a, b in _CRISP_ADAPTOR:
            out[f"funasr.adaptor.blk.{i}.{b}"] = sd[f"audio_adaptor.blocks.{i}.{a}"]
    out["token_embd.weight"] = sd["llm.model.embed_tokens.weight"]
    out["output.weight"] = sd.get("llm.lm_head.weight", sd["llm.model.embed_tokens.weight"])
    out["output_norm.weight"] = sd["llm.model.norm.weight"]
    for i in range(int(qwen["num_hidden_layers"])):
        for a, b in _CRISP_LLM:
            out[f"blk.{i}.{b}"] = sd[f"llm.model.layers.{i}.{a}"]
    return out


def write_crispasr(src: Path, dst: Path, variant: str) -> None:
    import gguf
    import numpy as np
    import torch

    if variant not in ("f32", "f16"):
        raise ValueError(f"crispasr form {variant!r}: choose f32 or f16")
    cfg, qwen = _cfg(src)
    enc, ad, fe = cfg["audio_encoder_conf"], cfg["audio_adaptor_conf"], cfg["frontend_conf"]
    dst.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(dst / f"funasr-nano-{variant}.gguf"), "funasr")
    u32 = {"funasr.sample_rate": int(fe["fs"]), "funasr.n_mels": int(fe["n_mels"]),
           "funasr.frame_length_ms": int(fe["frame_length"]), "funasr.frame_shift_ms": int(fe["frame_shift"]),
           "funasr.lfr_m": int(fe["lfr_m"]), "funasr.lfr_n": int(fe["lfr_n"]),
           "funasr.d_model": int(enc["output_size"]), "funasr.n_heads": int(enc["attention_heads"]),
           "funasr.ffn_dim": int(enc["linear_units"]), "funasr.n_blocks_base": int(enc["num_blocks"]),
           "funasr.n_blocks_tp": int(enc["tp_blocks"]), "funasr.sanm_kernel": int(enc["kernel_size"]),
           "funasr.ada_d_in": int(enc["output_size"]), "funasr.ada_ffn": int(ad["ffn_dim"]),
           "funasr.ada_d_out": int(ad["llm_dim"]), "funasr.ada_n_layers": int(ad["n_layer"]),
           "funasr.ada_ffn_inner": int(ad["llm_dim"]) // 4,
           "funasr.llm.n_layers": int(qwen["num_hidden_layers"]), "funasr.llm.d_model": int(qwen["hidden_size"]),
           "funasr.llm.n_heads": int(qwen["num_attention_heads"]),
           "funasr.llm.n_kv_heads": int(qwen["num_key_value_heads"]), "funasr.llm.head_dim": int(qwen["head_dim"]),
           "funasr.llm.ff_dim": int(qwen["intermediate_size"]), "funasr.llm.vocab_size": int(qwen["vocab_size"]),
           "funasr.llm.max_pos": int(qwen["max_position_embeddings"]), "funasr.eos_token_id": 151645,
           "funasr.pad_token_id": 151643}
    for k, v in u32.items():
        w.add_uint32(k, v)
    w.add_float32("funasr.llm.rope_theta", float(qwen["rope_theta"]))
    w.add_float32("funasr.llm.rms_norm_eps", float(qwen["rms_norm_eps"]))
    w.add_bool("funasr.use_low_frame_rate", bool(ad.get("use_low_frame_rate", True)))
    tj = json.loads((src / "Qwen3-0.6B" / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = dict(tj["model"]["vocab"])
    for t in tj.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
    tokens = [""] * (max(vocab.values()) + 1)
    for t, i in vocab.items():
        tokens[i] = t
    tokens = [t or f"[PAD{i}]" for i, t in enumerate(tokens)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    dt = np.float32 if variant == "f32" else np.float16
    for name, t in crispasr_tensors(_state_dict(src), cfg, qwen).items():
        a = t.to(torch.float32).numpy()
        # only matrices take the form's dtype: norms, biases and the FSMN kernels stay float32
        w.add_tensor(name, a.astype(dt) if a.ndim == 2 else a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_form(form: str, src: Path, dst: Path) -> None:
    if form == "hf":
        write_hf(src, dst)
    elif form.startswith("mlx_audio-"):
        write_mlx_audio(src, dst, form.split("-", 1)[1])
    elif form.startswith("funasr_mlx-"):
        write_funasr_mlx(src, dst, form.split("-", 1)[1])
    elif form.startswith("crispasr-"):
        write_crispasr(src, dst, form.split("-", 1)[1])
    else:
        raise ValueError(f"unknown form {form!r}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__.split("\n\n")[1])
    write_form(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
