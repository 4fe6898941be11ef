"""Fused decoder projections: q/k/v as one matrix, gate/up as one matrix.

A decoded token runs every decoder layer once on a single row, so the step is a chain of small
kernels; on a GPU each costs a few microseconds of launch whatever its size (measured on an H200
with MLX CUDA: 5-6 us per element-wise op, 1.45 ms for the 197 bf16 matrix-vector products of a
step vs 3.4 ms for the whole step; tools/gpu/probe_decode.py). Concatenating the output rows of
q/k/v (2048 + 1024 + 1024) and of gate/up (3072 + 3072) turns 5 products per layer into 2, with
the same arithmetic per output element. Quantized matrices concatenate the same way (groups run
along the input dimension), so any preset can be fused.

The checkpoint layout is unchanged: `load` fuses after the weights are in place, and
`unfused_parameters` gives the separate q/k/v/gate/up tensors back for saving.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _concat(mods: list) -> nn.Module:
    first = mods[0]
    kinds = {(type(m), getattr(m, "bits", None), getattr(m, "group_size", None), getattr(m, "mode", None),
              "bias" in m, m["weight"].dtype) for m in mods}
    if len(kinds) != 1:
        raise ValueError(f"cannot fuse projections of different kinds: {sorted(map(str, kinds))}")
    fused = type(first).__new__(type(first))
    nn.Module.__init__(fused)
    for attr in ("group_size", "bits", "mode"):
        if hasattr(first, attr):
            setattr(fused, attr, getattr(first, attr))
    for key in ("weight", "scales", "biases", "bias"):
        if key in first and first[key] is not None:
            fused[key] = mx.concatenate([m[key] for m in mods], axis=0)
        elif key in first:
            fused[key] = None
    if isinstance(first, nn.QuantizedLinear):
        fused.freeze()
    return fused


def fuse_projections(llm) -> int:
    """Replace q/k/v and gate/up of every decoder layer by fused modules, in place (idempotent).
    Evaluates layer by layer so the separate matrices are freed as it goes. Returns the number of
    layers changed."""
    n = 0
    for layer in llm.model.layers:
        changed = False
        for parent in (layer.self_attn, layer.mlp):
            for name, parts in FUSED.items():
                if all(p in parent for p in parts):
                    parent[name] = _concat([parent[p] for p in parts])
                    for p in parts:
                        parent.pop(p)
                    changed = True
        if changed:
            mx.eval(layer.parameters())
            n += 1
    return n


def is_fused(llm) -> bool:
    return "qkv_proj" in llm.model.layers[0].self_attn


def split_sizes(cfg) -> dict[str, list[int]]:
    """Output rows of each part of the fused matrices, in order."""
    q = cfg.num_attention_heads * cfg.head_dim
    kv = cfg.num_key_value_heads * cfg.head_dim
    return {"qkv_proj": [q, kv, kv], "gate_up_proj": [cfg.intermediate_size, cfg.intermediate_size]}


def unfused_parameters(params: dict[str, mx.array], cfg) -> dict[str, mx.array]:
    """{path: array} of a network's parameters in the checkpoint layout: fused q/k/v and gate/up
    tensors (weight, scales, biases, bias) split back into their parts. `cfg`: the Qwen3 config."""
    sizes = split_sizes(cfg)
    out = {}
    for k, v in params.items():
        for name, parts in FUSED.items():
            tag = f".{name}."
            if tag in k:
                head, tail = k.split(tag, 1)
                offs = 0
                for part, rows in zip(parts, sizes[name]):
                    out[f"{head}.{part}.{tail}"] = v[offs:offs + rows]
                    offs += rows
                break
        else:
            out[k] = v
    return out


def unfused_module_paths(paths: dict[str, dict]) -> dict[str, dict]:
    """A {module path: settings} map (quantized modules) in the checkpoint layout."""
    out = {}
    for p, s in paths.items():
        for name, parts in FUSED.items():
            if p.endswith("." + name):
                for part in parts:
                    out[p[: -len(name)] + part] = dict(s)
                break
        else:
            out[p] = s
    return out


__all__ = ["fuse_projections", "is_fused", "unfused_parameters", "unfused_module_paths", "split_sizes"]
