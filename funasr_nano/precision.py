"""Weight precision per component: float32 / bfloat16 / float16 casts and MLX affine 4/8-bit
quantization, chosen with a preset string; overflow checks; quantized checkpoints.

Components
----------
``encoder``     ``audio_encoder.*``   (SenseVoice SAN-M, ~221M parameters at the released size)
``adaptor``     ``audio_adaptor.*``   (frame stacking MLP + 2 Transformer blocks, ~21M)
``llm_layers``  ``llm.model.layers.*`` and the final ``llm.model.norm`` (Qwen3 blocks, ~440M)
``embedding``   ``llm.model.embed_tokens`` (+ the tied LM head, or ``llm.lm_head`` when untied; ~156M)

Preset grammar
--------------
::

    preset  := part ("+" part)*
    part    := prec ("-" option)*
    prec    := fp32 | bf16 | fp16                   (aliases: float32, f32, bfloat16, float16, half)
             | q8 | q4                              MLX affine quantization (scale + bias per group)
             | mxfp4 | nvfp4 | mxfp8                MLX microscaling floats (groups of 32 / 16 / 32)
    option  := g32 | g64 | g128                     group size, q8 / q4 only (default 64)
             | all | llm | audio                    targets: llm = layers + embed, audio = encoder + adaptor
             | encoder | adaptor | layers | embed
             | @fp32 | @bf16 | @fp16                compute dtype of the targeted groups (see below)

A part without a target applies to every component. Parts apply left to right (a later part
overrides an earlier one where they overlap); components no part names stay fp32. Examples:
``fp32``, ``bf16``, ``fp16``, ``q8``, ``q4``, ``q4-g32``, ``q4-llm+bf16-audio``,
``q8-llm+fp32-audio``, ``q4-layers+q8-embed+bf16-audio``, ``q4-@bf16``, ``mxfp4``,
``mxfp4-llm+bf16-audio``, ``nvfp4``, ``mxfp8`` (a ``@dtype`` option may
also be glued to the precision: ``q4@bf16``, ``q4-llm@bf16+fp32-audio``).

Compute dtype. The network has two compute groups, ``audio`` (encoder + adaptor) and ``llm``
(layers + embedding); activations of a group, and every parameter of it that is not a quantized
matrix (norms, biases, FSMN taps, quantization scales/biases, Linear layers whose input width is
not a multiple of the group size such as the encoder's 560-wide first layer), use the group's
compute dtype: the ``@dtype`` option when given, else the first float precision named for the
group's components (encoder before adaptor, layers before embed), else float32.

Compute dtype of quantized groups. A preset that names no float precision and no ``@dtype`` for a
fully quantized group computes in the backend policy's ``quant_compute`` (`funasr_nano.runtime.backend`):
float32 on the CPU, where MLX's ``quantized_matmul`` with bfloat16 activations is 8-15x slower per
decoded token (1x1024 @ 1024x3072 q4: 3.5 ms fp32 vs 28 ms bf16) and dense bf16 GEMMs have no BLAS
path; bfloat16 on Metal and CUDA, as mlx-lm computes quantized models. `parse_preset` takes it as
an argument; preset names are canonical against float32 (``q4`` computing in bf16 is named
``q4@bf16``), so a recorded name means the same on every machine.

Compute dtype of a bf16 audio group. Likewise, an audio group stored in bf16 whose preset names no
``@dtype`` computes in the policy's ``bf16_audio_compute``: float32 on the CPU, where MLX's dense
bf16 GEMM has no BLAS path (one encoder layer's 167x512 @ 512x1536 on a 10 s clip: 49 ms bf16 vs
1.6 ms float32), bfloat16 on Metal and CUDA. A float component stored in a dtype other than its
group's compute dtype keeps its matrices (Linear / Embedding weights) in the stored dtype, which
MLX upcasts at each matmul, and holds its other parameters in the compute dtype; so ``bf16`` on
the CPU is ``bf16-llm+bf16-audio@fp32``: bf16 weights in memory, float32 encoder and adaptor.

Why ``q4``/``q8`` quantize the audio path too: the encoder is ~221M of the ~840M parameters, so
leaving it float keeps 885 MB (fp32) or 442 MB (bf16) resident; ``q4`` is the "smallest model"
setting. ``q4-llm+bf16-audio`` is the conservative alternative that keeps the audio features
unquantized (bf16 has the float32 exponent range, so no fp16-style overflow) and quantizes
only the decoder, where 4-bit weight-only quantization is well established.

Dense path. MLX's CPU ``quantized_matmul`` runs row by row (~0.7 s for 200 rows x 1024x3072
vs 25 ms for the dense OpenBLAS GEMM), and MLX CUDA's is slow for batches, so the quantized layers
here (`QuantizedLinear`, `QuantizedEmbedding`) can dequantize the matrix and use the dense matmul
for calls with many rows. The row threshold (and whether to dequantize block by block) comes from
the backend policy (`configure_quantized`); a layer built outside `load()` behaves exactly like
MLX's. Parameters and checkpoints are the standard MLX ones either way.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map_with_path

FLOAT_KINDS = {"fp32": mx.float32, "bf16": mx.bfloat16, "fp16": mx.float16}
QUANT_BITS = {"q8": 8, "q4": 4, "mxfp4": 4, "nvfp4": 4, "mxfp8": 8}
# MLX's quantization mode of each quantized precision; the microscaling float formats have a fixed
# group size (their scale format is defined per 32 or 16 elements) and no biases.
QUANT_MODES = {"q8": "affine", "q4": "affine", "mxfp4": "mxfp4", "nvfp4": "nvfp4", "mxfp8": "mxfp8"}
FIXED_GROUP_SIZE = {"mxfp4": 32, "nvfp4": 16, "mxfp8": 32}
KINDS = tuple(FLOAT_KINDS) + tuple(QUANT_BITS)
GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64
QUANT_MODE = "affine"  # of q8 / q4
DEFAULT_QUANT_COMPUTE = "fp32"  # what canonical preset names are relative to

COMPONENTS = ("encoder", "adaptor", "llm_layers", "embedding")
GROUPS = {"audio": ("encoder", "adaptor"), "llm": ("llm_layers", "embedding")}
TARGETS = {
    "all": COMPONENTS,
    "llm": GROUPS["llm"],
    "audio": GROUPS["audio"],
    "encoder": ("encoder",),
    "adaptor": ("adaptor",),
    "layers": ("llm_layers",),
    "embed": ("embedding",),
}
_TARGET_OF = {"encoder": "encoder", "adaptor": "adaptor", "llm_layers": "layers", "embedding": "embed"}
_ALIASES = {"float32": "fp32", "f32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
            "f16": "fp16", "int8": "q8", "int4": "q4"}
_PREFIXES = {
    "encoder": ("audio_encoder.",),
    "adaptor": ("audio_adaptor.",),
    "embedding": ("llm.model.embed_tokens.", "llm.lm_head."),
    "llm_layers": ("llm.",),  # everything else under llm. (layers and the final norm)
}

# The benchmarks sweep these.
PRESETS = ("fp32", "bf16", "fp16", "q8", "q4", "q4-llm+bf16-audio", "mxfp4", "mxfp4-llm+bf16-audio",
           "nvfp4", "mxfp8")

GRAMMAR = (
    "preset := part ('+' part)*; part := prec ('-' option)*; prec := fp32|bf16|fp16|q8|q4|mxfp4|nvfp4|mxfp8; "
    "option := g32|g64|g128 (q8/q4 only) | all|llm|audio|encoder|adaptor|layers|embed | "
    "@fp32|@bf16|@fp16 (compute dtype). Examples: " + ", ".join(PRESETS) + ", q4-g32, q8-llm+fp32-audio"
)

class NumericalOverflowError(FloatingPointError):
    """A stage produced inf/nan, typically float16 overflow; raised instead of decoding garbage."""

    def __init__(self, stage: str, preset=None, dtype=None, n_bad: int = 0, size: int = 0, max_abs=None):
        self.stage, self.preset, self.dtype = stage, preset, dtype
        self.n_bad, self.size, self.max_abs = n_bad, size, max_abs
        where = f"preset {preset!r}" if preset else "this precision"
        big = f"; largest finite |x| = {max_abs:.4g}" if max_abs is not None else ""
        hint = ""
        if dtype == mx.float16:
            hint = (" float16 overflows above 65504, and the audio path is known to exceed it (the official "
                    "runtime warns that adaptor outputs reach |x| > 1000 and fp16 can overflow): use bf16 or "
                    "fp32 for this component, e.g. preset 'q4-llm+bf16-audio' or 'bf16'.")
        super().__init__(f"non-finite values (inf/nan) in the {stage} output under {where} "
                         f"(dtype {_dtype_name(dtype)}): {n_bad} of {size} elements{big}.{hint}")


def _dtype_name(dt) -> str:
    for k, v in FLOAT_KINDS.items():
        if dt == v:
            return k
    return str(dt)


def check_finite(x: mx.array, stage: str, preset=None) -> mx.array:
    """Raise `NumericalOverflowError` naming `stage` and `preset` if `x` holds inf or nan; returns `x`.

    Evaluates one reduction (microseconds next to any stage); call it where the stage output is
    evaluated anyway.
    """
    if not mx.issubdtype(x.dtype, mx.floating):
        return x
    finite = mx.isfinite(x)
    if bool(mx.all(finite).item()):
        return x
    n_bad = int((~finite).sum().item())
    fin = mx.where(finite, mx.abs(x.astype(mx.float32)), 0)
    max_abs = float(fin.max().item()) if n_bad < x.size else None
    raise NumericalOverflowError(stage, preset, x.dtype, n_bad, x.size, max_abs)


# --------------------------------------------------------------------------------------------
# plans and presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentPrecision:
    """One component's weights: a float dtype, or quantized (`bits`, `group_size`, MLX `mode`)."""

    kind: str = "fp32"
    group_size: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown precision {self.kind!r}; choose one of {KINDS}")
        if self.kind in FIXED_GROUP_SIZE:
            gs = FIXED_GROUP_SIZE[self.kind]
            if self.group_size is not None and int(self.group_size) != gs:
                raise ValueError(f"{self.kind} has a fixed group size of {gs}, got {self.group_size}")
            object.__setattr__(self, "group_size", gs)
        elif self.kind in QUANT_BITS:
            gs = DEFAULT_GROUP_SIZE if self.group_size is None else int(self.group_size)
            if gs not in GROUP_SIZES:
                raise ValueError(f"group size {gs} not supported; choose one of {GROUP_SIZES}")
            object.__setattr__(self, "group_size", gs)
        elif self.group_size is not None:
            raise ValueError(f"{self.kind} is not quantized: it takes no group size")

    @property
    def quantized(self) -> bool:
        return self.kind in QUANT_BITS

    @property
    def bits(self) -> int | None:
        return QUANT_BITS.get(self.kind)

    @property
    def mode(self) -> str | None:
        return QUANT_MODES.get(self.kind)

    @property
    def dtype(self):
        """The float dtype of a float component (None when quantized)."""
        return FLOAT_KINDS.get(self.kind)

    def __str__(self) -> str:
        if self.kind in ("q8", "q4") and self.group_size != DEFAULT_GROUP_SIZE:
            return f"{self.kind}-g{self.group_size}"
        return self.kind


@dataclass(frozen=True)
class PrecisionPlan:
    """Per-component weight precision plus the compute dtype of the audio and llm groups."""

    encoder: ComponentPrecision = field(default_factory=ComponentPrecision)
    adaptor: ComponentPrecision = field(default_factory=ComponentPrecision)
    llm_layers: ComponentPrecision = field(default_factory=ComponentPrecision)
    embedding: ComponentPrecision = field(default_factory=ComponentPrecision)
    audio_compute: str = "fp32"
    llm_compute: str = "fp32"

    def __post_init__(self):
        for c in COMPONENTS:
            v = getattr(self, c)
            if isinstance(v, str):
                object.__setattr__(self, c, ComponentPrecision(v))
            elif isinstance(v, dict):
                object.__setattr__(self, c, ComponentPrecision(**v))
        for g in ("audio_compute", "llm_compute"):
            v = _ALIASES.get(str(getattr(self, g)).lower(), str(getattr(self, g)).lower())
            if v not in FLOAT_KINDS:
                raise ValueError(f"{g} must be one of {tuple(FLOAT_KINDS)}, got {getattr(self, g)!r}")
            object.__setattr__(self, g, v)

    # dtypes the pipeline uses
    @property
    def audio_dtype(self):
        return FLOAT_KINDS[self.audio_compute]

    @property
    def llm_dtype(self):
        return FLOAT_KINDS[self.llm_compute]

    def component(self, name: str) -> ComponentPrecision:
        return getattr(self, name)

    def compute_of(self, component: str) -> str:
        return self.audio_compute if component in GROUPS["audio"] else self.llm_compute

    @property
    def quantized(self) -> bool:
        return any(self.component(c).quantized for c in COMPONENTS)

    @property
    def uses_fp16(self) -> bool:
        return "fp16" in (self.audio_compute, self.llm_compute) or any(
            self.component(c).kind == "fp16" for c in COMPONENTS)

    @property
    def name(self) -> str:
        """The canonical preset string (parse_preset(plan.name) == plan)."""
        return _canonical(self)

    def __str__(self) -> str:
        return self.name

    def to_dict(self) -> dict:
        d = {c: {"kind": self.component(c).kind, "group_size": self.component(c).group_size} for c in COMPONENTS}
        d.update(audio_compute=self.audio_compute, llm_compute=self.llm_compute, preset=self.name)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PrecisionPlan":
        return cls(**{c: ComponentPrecision(**d[c]) for c in COMPONENTS},
                   audio_compute=d["audio_compute"], llm_compute=d["llm_compute"])

    @classmethod
    def from_dtypes(cls, dtype="fp32", audio_dtype="fp32") -> "PrecisionPlan":
        """The float plan `load(dtype=..., audio_dtype=...)` means without a preset."""
        llm, aud = _kind_of_dtype(dtype), _kind_of_dtype(audio_dtype)
        return cls(ComponentPrecision(aud), ComponentPrecision(aud), ComponentPrecision(llm),
                   ComponentPrecision(llm), audio_compute=aud, llm_compute=llm)


def _kind_of_dtype(d) -> str:
    if isinstance(d, mx.Dtype):
        for k, v in FLOAT_KINDS.items():
            if v == d:
                return k
        raise ValueError(f"unsupported dtype {d}")
    s = _ALIASES.get(str(d).lower(), str(d).lower())
    if s not in FLOAT_KINDS:
        raise ValueError(f"unknown dtype {d!r}; choose one of {tuple(FLOAT_KINDS)} (or their long names)")
    return s


def _default_compute(comps: dict, group: str, quant_compute: str = DEFAULT_QUANT_COMPUTE) -> str:
    for c in GROUPS[group]:
        if not comps[c].quantized:
            return comps[c].kind
    return quant_compute


def _bad(name, why):
    return ValueError(f"invalid precision preset {name!r}: {why}.\nGrammar: {GRAMMAR}")


def parse_preset(name, quant_compute: str = DEFAULT_QUANT_COMPUTE,
                 bf16_audio_compute: str = "bf16") -> PrecisionPlan:
    """Parse a preset string (grammar in the module docstring) into a `PrecisionPlan`.

    `quant_compute` is the compute dtype of a fully quantized group whose part names no ``@dtype``,
    `bf16_audio_compute` that of an audio group whose first float component is bf16 and whose part
    names no ``@dtype`` (`load()` passes the backend policy's). A `PrecisionPlan` passes through
    unchanged. Unknown or malformed names raise ValueError with the grammar.
    """
    if isinstance(name, PrecisionPlan):
        return name
    if quant_compute not in FLOAT_KINDS:
        raise ValueError(f"quant_compute must be one of {tuple(FLOAT_KINDS)}, got {quant_compute!r}")
    if bf16_audio_compute not in ("bf16", "fp32"):
        raise ValueError(f"bf16_audio_compute must be 'bf16' or 'fp32', got {bf16_audio_compute!r}")
    if not isinstance(name, str) or not name.strip():
        raise _bad(name, "expected a non-empty string")
    s = name.strip().lower()
    comps = {c: ComponentPrecision("fp32") for c in COMPONENTS}
    compute: dict[str, str] = {}
    for part in s.split("+"):
        if not part:
            raise _bad(name, "empty part around '+'")
        tokens = []
        for tok in part.split("-"):
            if "@" in tok and not tok.startswith("@"):
                head, _, rest = tok.partition("@")
                tokens += [head, "@" + rest]
            else:
                tokens.append(tok)
        prec = _ALIASES.get(tokens[0], tokens[0])
        if prec not in KINDS:
            raise _bad(name, f"{tokens[0]!r} is not a precision (fp32, bf16, fp16, q8, q4, mxfp4, nvfp4, mxfp8)")
        group_size, targets, comp_dtype = None, [], None
        for tok in tokens[1:]:
            if tok.startswith("g") and tok[1:].isdigit():
                if prec not in QUANT_BITS:
                    raise _bad(name, f"group size {tok!r} given to the unquantized precision {prec}")
                if prec in FIXED_GROUP_SIZE:
                    raise _bad(name, f"{prec} has a fixed group size of {FIXED_GROUP_SIZE[prec]}; it takes no {tok!r}")
                if int(tok[1:]) not in GROUP_SIZES:
                    raise _bad(name, f"group size {tok[1:]} not supported (choose {GROUP_SIZES})")
                group_size = int(tok[1:])
            elif tok.startswith("@"):
                d = _ALIASES.get(tok[1:], tok[1:])
                if d not in FLOAT_KINDS:
                    raise _bad(name, f"compute dtype {tok!r} is not one of @fp32, @bf16, @fp16")
                comp_dtype = d
            elif tok in TARGETS:
                targets.append(tok)
            else:
                raise _bad(name, f"unknown option {tok!r}")
        spec = ComponentPrecision(prec, group_size)
        targeted = [c for t in (targets or ["all"]) for c in TARGETS[t]]
        for c in targeted:
            comps[c] = spec
        if comp_dtype:
            for g, members in GROUPS.items():
                if any(c in members for c in targeted):
                    compute[g] = comp_dtype
    audio = compute.get("audio") or _default_compute(comps, "audio", quant_compute)
    if "audio" not in compute and any(not comps[c].quantized for c in GROUPS["audio"]) and audio == "bf16":
        audio = bf16_audio_compute  # stored bf16: the backend policy says what it computes in
    return PrecisionPlan(**comps,
                         audio_compute=audio,
                         llm_compute=compute.get("llm") or _default_compute(comps, "llm", quant_compute))


def _canonical(plan: PrecisionPlan) -> str:
    comps = {c: plan.component(c) for c in COMPONENTS}
    sfx = {}
    for group in GROUPS:
        want = getattr(plan, f"{group}_compute")
        sfx[group] = "" if want == _default_compute(comps, group) else f"@{want}"
    if len({str(comps[c]) for c in COMPONENTS}) == 1 and sfx["audio"] == sfx["llm"]:
        return str(comps["encoder"]) + sfx["audio"]
    parts = []
    for group in ("llm", "audio"):
        a, b = GROUPS[group]
        if str(comps[a]) == str(comps[b]):
            parts.append(f"{comps[a]}-{group}{sfx[group]}")
        else:
            parts += [f"{comps[a]}-{_TARGET_OF[a]}", f"{comps[b]}-{_TARGET_OF[b]}{sfx[group]}"]
    return "+".join(parts)


# --------------------------------------------------------------------------------------------
# quantized layers (CPU-aware) and applying a plan
# --------------------------------------------------------------------------------------------


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
    from .runtime.backend import detect_backend

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


# --------------------------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# quantized checkpoints
# --------------------------------------------------------------------------------------------

QUANT_CONFIG = "quantization.json"
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

    from .config import llm_dir
    from .synthetic import MARKER

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
    if not (dst_llm / "config.json").is_file() or getattr(asr, "checkpoint_form", "official") != "official":
        # other forms keep the Qwen3 config inside their own config.json (copied above as is)
        with open(dst_llm / "config.json", "w", encoding="utf-8") as f:
            json.dump(asr.cfg.raw["config.json"], f, indent=2)
    if (src / "configuration.json").is_file() and src.resolve() != out.resolve():
        shutil.copy2(src / "configuration.json", out / "configuration.json")
    synthetic = bool(asr.synthetic)
    if synthetic:
        text = (src / MARKER).read_text(encoding="utf-8") if (src / MARKER).is_file() else \
            "These are SYNTHETIC weights.\n"
        (out / MARKER).write_text(text + f"converted: funasr_nano.precision.save_quantized preset {plan.name}\n",
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
                       bf16_audio_compute: str = "bf16"):
    """Build a `FunASRNano` for a checkpoint written by `save_quantized`: quantized modules first,
    then the stored tensors loaded directly (no float copy of the quantized matrices is ever
    computed: the skeleton's random initialisers stay unevaluated). Returns (net, plan)."""
    from .checkpoint import check_state_dict, load_safetensors_dir
    from .model import FunASRNano

    meta = read_precision_config(ckpt_dir)
    plan = PrecisionPlan.from_dict(meta["plan"])
    if preset is not None and parse_preset(preset, quant_compute, bf16_audio_compute) != plan:
        raise ValueError(f"{ckpt_dir} holds preset {plan.name!r}; it cannot be loaded as "
                         f"{parse_preset(preset, quant_compute, bf16_audio_compute).name!r} "
                         "(load the original float checkpoint to apply another preset)")
    net = FunASRNano(cfg)
    quantize_modules(net, meta["quantized_modules"])
    weights = load_safetensors_dir(ckpt_dir)
    check_state_dict(weights, net.expected_shapes(), optional_prefixes=())
    net.load_weights(list(weights.items()), strict=True)
    return net, plan


__all__ = [
    "PRESETS", "GRAMMAR", "ComponentPrecision", "PrecisionPlan", "parse_preset", "apply_precision",
    "weight_bytes", "parameter_counts", "check_finite", "NumericalOverflowError", "save_quantized",
    "load_precision_net", "is_precision_checkpoint", "QuantizedLinear", "QuantizedEmbedding",
    "quantization_map", "quantize_modules", "component_of", "configure_quantized", "mode_support",
    "check_modes_supported", "UnsupportedModeError",
]
