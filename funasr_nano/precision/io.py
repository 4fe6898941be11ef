"""Quantized checkpoints: ``model.safetensors`` + ``quantization.json`` written by `save_quantized`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..checkpoint import QUANT_CONFIG
from .plan import DEFAULT_QUANT_COMPUTE, PrecisionPlan, parse_preset
from .quantize import quantize_modules, weight_bytes

WEIGHTS_NAME = "model.safetensors"
FORMAT = "funasr_nano.precision"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")


def save_quantized(asr, out_dir) -> Path:
    """Write `asr` (any plan; usually quantized) as a loadable checkpoint directory:
    ``model.safetensors`` (the parameters exactly as held), ``quantization.json`` (the plan and
    the per-module quantization settings), ``config.yaml``, the Qwen3 config/tokenizer directory,
    and the synthetic-weights marker when the source had one. `funasr_nano.load(out_dir)` builds
    the quantized modules first and loads these tensors directly.
    """
    import yaml

    from ..checkpoint import SYNTHETIC_MARKER as MARKER
    from ..model.config import llm_dir

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(asr.checkpoint_dir) if asr.checkpoint_dir is not None else Path(asr.source)
    plan = asr.plan
    qmap = {p: {"bits": m.bits, "group_size": m.group_size, "mode": m.mode,
                "type": "embedding" if isinstance(m, nn.QuantizedEmbedding) else "linear"}
            for p, m in tree_flatten(asr.net.leaf_modules(), is_leaf=nn.Module.is_module)
            if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))}

    params = dict(tree_flatten(asr.net.parameters()))
    mx.save_safetensors(str(out / WEIGHTS_NAME), params,
                        metadata={"format": "mlx", "funasr_nano_preset": plan.name})
    raw_yaml = dict(asr.cfg.raw["config.yaml"])
    llm_conf = dict(raw_yaml.get("llm_conf") or {})
    src_llm = llm_dir(src, raw_yaml)
    llm_name = "Qwen3-0.6B"
    llm_conf["init_param_path"] = llm_name
    raw_yaml["llm_conf"] = llm_conf
    with open(out / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(raw_yaml, f, sort_keys=False, allow_unicode=True)
    dst_llm = out / llm_name
    if src_llm.resolve() != dst_llm.resolve():
        dst_llm.mkdir(exist_ok=True)
        for p in src_llm.iterdir():
            if p.is_file() and not p.name.endswith(_WEIGHT_SUFFIXES):
                shutil.copy2(p, dst_llm / p.name)
    if not (dst_llm / "config.json").is_file() or asr.checkpoint_form != "official":
        # other forms keep the Qwen3 config inside their own config.json (copied above as is)
        with open(dst_llm / "config.json", "w", encoding="utf-8") as f:
            json.dump(asr.cfg.raw["config.json"], f, indent=2)
    if (src / "configuration.json").is_file() and src.resolve() != out.resolve():
        shutil.copy2(src / "configuration.json", out / "configuration.json")
    synthetic = bool(asr.synthetic)
    if synthetic:
        text = (src / MARKER).read_text(encoding="utf-8") if (src / MARKER).is_file() else \
            "These are SYNTHETIC weights.\n"
        (out / MARKER).write_text(text + f"converted: funasr_nano.precision.io.save_quantized preset {plan.name}\n",
                                  encoding="utf-8")
    meta = {
        "format": FORMAT,
        "version": 1,
        "preset": plan.name,
        "plan": plan.to_dict(),
        "modes": sorted({q["mode"] for q in qmap.values()}),
        "quantized_modules": qmap,
        "weights": WEIGHTS_NAME,
        "weight_bytes": weight_bytes(asr.net),
        "source": str(asr.source),
        "synthetic": synthetic,
        "mlx_version": mx.__version__,
    }
    with open(out / QUANT_CONFIG, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return out


def is_precision_checkpoint(ckpt_dir) -> bool:
    return (Path(ckpt_dir) / QUANT_CONFIG).is_file()


def read_precision_config(ckpt_dir) -> dict:
    p = Path(ckpt_dir) / QUANT_CONFIG
    with open(p, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT or int(meta.get("version", 0)) != 1:
        raise ValueError(f"{p}: not a {FORMAT} v1 file (format={meta.get('format')!r}, "
                         f"version={meta.get('version')!r})")
    return meta


def load_precision_net(ckpt_dir, cfg, preset=None, quant_compute: str = DEFAULT_QUANT_COMPUTE,
                       bf16_audio_compute: str = "bf16", bf16_llm_compute: str = "bf16"):
    """Build a `FunASRNano` for a checkpoint written by `save_quantized`: quantized modules first,
    then the stored tensors loaded directly (no float copy of the quantized matrices is ever
    computed: the skeleton's random initialisers stay unevaluated). Returns (net, plan)."""
    from ..checkpoint.cache import load_safetensors_dir
    from ..checkpoint.resolve import check_state_dict
    from ..model.fun_asr_nano import FunASRNano

    meta = read_precision_config(ckpt_dir)
    plan = PrecisionPlan.from_dict(meta["plan"])
    asked = None if preset is None else parse_preset(preset, quant_compute, bf16_audio_compute, bf16_llm_compute)
    if asked is not None and asked != plan:
        raise ValueError(f"{ckpt_dir} holds preset {plan.name!r}; it cannot be loaded as {asked.name!r} "
                         "(load the original float checkpoint to apply another preset)")
    net = FunASRNano(cfg)
    quantize_modules(net, meta["quantized_modules"])
    weights = load_safetensors_dir(ckpt_dir)
    check_state_dict(weights, net.expected_shapes(), optional_prefixes=())
    net.load_weights(list(weights.items()), strict=True)
    return net, plan

