"""Quantized layers with a dense path chosen by the backend policy, and applying a `PrecisionPlan`.

Dense path. MLX's CPU ``quantized_matmul`` runs row by row (~0.7 s for 200 rows x 1024x3072
vs 25 ms for the dense OpenBLAS GEMM), and MLX CUDA's is slow for batches, so the quantized layers
here (`QuantizedLinear`, `QuantizedEmbedding`) can dequantize the matrix and use the dense matmul
for calls with many rows. The row threshold (and whether to dequantize block by block) comes from
the backend policy (`configure_quantized`); a layer built outside `load()` behaves exactly like
MLX's. Parameters and checkpoints are the standard MLX ones either way.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map_with_path

from .plan import (
    _PREFIXES,
    COMPONENTS,
    FLOAT_KINDS,
    QUANT_MODE,
    ComponentPrecision,
    PrecisionPlan,
    parse_preset,
)


def _takes_dense_path(m, x: mx.array) -> bool:
    """Whether quantized layer `m` multiplies `x` by its dequantized matrix (policy threshold)."""
    rows = x.size // max(x.shape[-1], 1) if x.ndim else 1
    return m.dense_min_rows is not None and rows >= m.dense_min_rows


# Dequantize at most this many weights at a time on the dense path (64 MB in float32): the tied
# 151936 x 1024 LM head would otherwise need a 622 MB float32 copy per call.
DENSE_CHUNK_WEIGHTS = 1 << 24


def _dequantized_matmul(x: mx.array, m) -> mx.array:
    """x @ dequantize(m.weight).T, dequantizing blocks of output rows so that the float copy of a
    large matrix never exists whole (each block is evaluated and freed before the next)."""
    w, scales, biases = m["weight"], m["scales"], m.get("biases")
    out_dims, in_dims = w.shape[0], w.shape[1] * 32 // m.bits
    block = max(1, DENSE_CHUNK_WEIGHTS // in_dims)

    def part(i, j):
        wd = mx.dequantize(w[i:j], scales[i:j], None if biases is None else biases[i:j],
                           group_size=m.group_size, bits=m.bits, mode=m.mode)
        return x @ wd.T

    if out_dims <= block or not m.dense_chunked:
        # Policy (GPUs): the float copy is transient device memory and evaluating block by block
        # would stall the pipelined decode loop: one dequantize.
        return part(0, out_dims)
    parts = []
    for i in range(0, out_dims, block):
        parts.append(part(i, min(i + block, out_dims)))
        # Evaluated one by one: left lazy, MLX materialises every block's float copy before the
        # products (measured: 1.19 GB transient for the 151936 x 1024 head vs 0.15 GB this way).
        mx.eval(parts[-1])
    return mx.concatenate(parts, axis=-1)


class QuantizedLinear(nn.QuantizedLinear):
    """`nn.QuantizedLinear` (same parameters) that, for calls with at least `dense_min_rows` rows,
    multiplies by the dequantized matrix with the dense matmul instead of `quantized_matmul`.
    `configure_quantized` sets the threshold from the backend policy; None (the default): never,
    exactly MLX's layer."""

    dense_min_rows: int | None = None
    dense_chunked: bool = False

    def __call__(self, x):
        if not _takes_dense_path(self, x):
            return super().__call__(x)
        y = _dequantized_matmul(x, self)
        if "bias" in self:
            y = y + self["bias"]
        return y


class QuantizedEmbedding(nn.QuantizedEmbedding):
    """`nn.QuantizedEmbedding` whose `as_linear` (the tied LM head) takes the dense path like
    `QuantizedLinear`."""

    dense_min_rows: int | None = None
    dense_chunked: bool = False

    def as_linear(self, x):
        if not _takes_dense_path(self, x):
            return super().as_linear(x)
        return _dequantized_matmul(x, self)


def configure_quantized(net: nn.Module, policy) -> int:
    """Give every quantized layer of `net` the backend policy's dense-path settings
    (`dequant_min_rows`, `dequant_chunked`); returns how many layers it set."""
    n = 0
    for _, m in tree_flatten(net.leaf_modules(), is_leaf=nn.Module.is_module):
        if isinstance(m, (QuantizedLinear, QuantizedEmbedding)):
            m.dense_min_rows = policy.dequant_min_rows
            m.dense_chunked = bool(policy.dequant_chunked)
            n += 1
    return n


class UnsupportedModeError(ValueError):
    """A quantization mode the backend MLX runs on cannot compute (raised instead of substituting one)."""


_MODE_SUPPORT: dict = {}


def mode_support(kind: str, compute: str = "fp32") -> str | None:
    """None when MLX's default device can quantize and multiply in the mode of the quantized
    precision `kind` with `compute` activations, else the reason (MLX's error). Probed once per
    process on a 64 x 64 matrix: MLX raises for modes a backend does not implement."""
    from ..runtime.backend import detect_backend

    key = (kind, compute, detect_backend())
    if key not in _MODE_SUPPORT:
        spec = ComponentPrecision(kind)
        try:
            w = mx.ones((64, 64))
            q = mx.quantize(w, group_size=spec.group_size, bits=spec.bits, mode=spec.mode)
            biases = q[2] if len(q) > 2 else None
            x = mx.ones((2, 64), dtype=FLOAT_KINDS[compute])
            mx.eval(mx.quantized_matmul(x, q[0], q[1], biases, transpose=True, group_size=spec.group_size,
                                        bits=spec.bits, mode=spec.mode))
            _MODE_SUPPORT[key] = None
        except Exception as e:  # MLX raises ValueError/RuntimeError for unimplemented kernels
            _MODE_SUPPORT[key] = f"{type(e).__name__}: {e}"
    return _MODE_SUPPORT[key]


def check_modes_supported(plan) -> None:
    """Raise `UnsupportedModeError` naming the precision and component if `plan` uses a
    quantization mode this backend cannot run."""
    plan = parse_preset(plan)
    for c in COMPONENTS:
        spec = plan.component(c)
        if spec.quantized:
            why = mode_support(spec.kind, plan.compute_of(c))
            if why:
                raise UnsupportedModeError(
                    f"preset {plan.name!r}: {spec.kind} ({spec.mode} mode, {_component_label(c)}) cannot run on "
                    f"this MLX backend ({mx.__version__}): {why}")


def _component_label(c: str) -> str:
    return {"llm_layers": "decoder layers", "embedding": "embedding"}.get(c, c)


def component_of(path: str) -> str:
    """The component a parameter or module path ('audio_encoder.encoders.0...') belongs to."""
    p = path + "."
    for c in ("encoder", "adaptor", "embedding", "llm_layers"):
        if p.startswith(_PREFIXES[c]):
            return c
    raise ValueError(f"{path!r} belongs to no component")


def quantizable(module, group_size: int) -> bool:
    """Linear/Embedding whose input width is a multiple of the group size (MLX's requirement)."""
    if isinstance(module, (nn.Linear, nn.Embedding)) and not isinstance(module, (nn.QuantizedLinear,)):
        return module.weight.shape[-1] % group_size == 0
    return False


def quantization_map(net: nn.Module, plan: PrecisionPlan) -> dict[str, dict]:
    """{module path: {bits, group_size, mode, type}} of the modules `plan` quantizes in `net`."""
    out = {}
    for path, m in tree_flatten(net.leaf_modules(), is_leaf=nn.Module.is_module):
        try:
            spec = plan.component(component_of(path))
        except ValueError:
            continue
        if spec.quantized and quantizable(m, spec.group_size):
            out[path] = {"bits": spec.bits, "group_size": spec.group_size, "mode": spec.mode,
                         "type": "embedding" if isinstance(m, nn.Embedding) else "linear"}
    return out


def quantize_modules(net: nn.Module, qmap: dict[str, dict]) -> None:
    """Replace the modules named in `qmap` with quantized ones, in place (mirrors `nn.quantize`
    with a class predicate, building this module's CPU-aware classes). Lazy: nothing is computed
    until the parameters are evaluated, so a skeleton can be quantized and then loaded."""

    def swap(path, m):
        q = qmap.get(path)
        if q is None:
            return m
        kw = dict(group_size=q["group_size"], bits=q["bits"], mode=q.get("mode", QUANT_MODE))
        if isinstance(m, nn.Embedding):
            return QuantizedEmbedding.from_embedding(m, **kw)
        if isinstance(m, nn.Linear):
            return QuantizedLinear.from_linear(m, **kw)
        raise ValueError(f"cannot quantize {path} ({type(m).__name__})")

    leaves = tree_map_with_path(swap, net.leaf_modules(), is_leaf=nn.Module.is_module)
    net.update_modules(leaves)
    missing = set(qmap) - {p for p, m in tree_flatten(net.leaf_modules(), is_leaf=nn.Module.is_module)
                           if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))}
    if missing:
        raise ValueError(f"quantization map names modules the network lacks: {sorted(missing)[:5]}")


def _cast_params(net: nn.Module, dtype_of) -> None:
    """Cast floating parameters in place; `dtype_of(path)` gives the target dtype or None."""
    new = []
    for k, v in tree_flatten(net.parameters()):
        dt = dtype_of(k)
        if dt is not None and mx.issubdtype(v.dtype, mx.floating) and v.dtype != dt:
            new.append((k, v.astype(dt)))
    if new:
        net.load_weights(new, strict=False)


def apply_precision(net: nn.Module, plan, evaluate: bool = True) -> dict[str, dict]:
    """Cast / quantize a `FunASRNano` in place according to `plan` (a PrecisionPlan or preset).

    Quantized matrices are quantized from the weights as they are (float32 when loaded through
    `load`), then scales/biases and the component's other float parameters are cast to the
    group's compute dtype; float components' matrices (Linear / Embedding weights) are cast to
    their dtype, their other parameters to the group's compute dtype (the same dtype unless the
    plan computes a bf16-stored group in float32). Returns the quantization map.
    With `evaluate`, evaluates module by module so float32 intermediates are freed early.
    """
    plan = parse_preset(plan)
    qmap = quantization_map(net, plan)
    quantize_modules(net, qmap)
    matrices = {f"{p}.weight" for p, m in tree_flatten(net.leaf_modules(), is_leaf=nn.Module.is_module)
                if isinstance(m, (nn.Linear, nn.Embedding))
                and not isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))}

    def target(path):
        c = component_of(path)
        spec = plan.component(c)
        compute = FLOAT_KINDS[plan.compute_of(c)]
        return spec.dtype if not spec.quantized and path in matrices else compute

    _cast_params(net, target)
    if evaluate:
        # Module by module: with lazily loaded weights (mx.load) only one matrix's float32
        # intermediate exists at a time, so the peak stays near the final size (provided the
        # caller holds no other reference to the source arrays).
        for _, m in tree_flatten(net.leaf_modules(), is_leaf=nn.Module.is_module):
            mx.eval(m.parameters())
    return qmap





def weight_bytes(net: nn.Module) -> dict[str, int]:
    """Bytes of parameters per component (quantized weights + scales + biases included) and total."""
    out = {c: 0 for c in COMPONENTS}
    for k, v in tree_flatten(net.parameters()):
        out[component_of(k)] += v.nbytes
    out["total"] = sum(out[c] for c in COMPONENTS)
    return out


def parameter_counts(net: nn.Module) -> dict[str, int]:
    """Logical parameter counts per component (a quantized matrix counts its unpacked size)."""
    out = {c: 0 for c in COMPONENTS}
    leaves = dict(tree_flatten(net.leaf_modules(), is_leaf=nn.Module.is_module))
    for path, m in leaves.items():
        c = component_of(path)
        for k, v in tree_flatten(m.parameters()):
            if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
                if k == "weight":
                    out[c] += v.size * 32 // m.bits
                elif k in ("scales", "biases"):
                    continue
                else:
                    out[c] += v.size
            else:
                out[c] += v.size
    out["total"] = sum(out[c] for c in COMPONENTS)
    return out


