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

Compute dtype of a bf16 group. Likewise, an audio (llm) group stored in bf16 whose preset names no
``@dtype`` computes in the policy's ``bf16_audio_compute`` (``bf16_llm_compute``): float32 on the
CPU, where MLX's dense bf16 GEMM has no BLAS path (one encoder layer's 167x512 @ 512x1536 on a
10 s clip: 49 ms bf16 vs 1.6 ms float32), bfloat16 on Metal and CUDA. A float component stored in
a dtype other than its group's compute dtype keeps its matrices (Linear / Embedding weights) in the
stored dtype, which MLX upcasts at each matmul, and holds its other parameters in the compute
dtype; so ``bf16`` on the CPU is ``bf16@fp32``: bf16 weights in memory, float32 activations.

Why ``q4``/``q8`` quantize the audio path too: the encoder is ~221M of the ~840M parameters, so
leaving it float keeps 885 MB (fp32) or 442 MB (bf16) resident; ``q4`` is the "smallest model"
setting. ``q4-llm+bf16-audio`` is the conservative alternative that keeps the audio features
unquantized (bf16 has the float32 exponent range, so no fp16-style overflow) and quantizes
only the decoder, where 4-bit weight-only quantization is well established.

Dense path: the quantized layers and their backend-dependent dense path are described in
`funasr_nano.precision.quantize`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx

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
                 bf16_audio_compute: str = "bf16", bf16_llm_compute: str = "bf16") -> PrecisionPlan:
    """Parse a preset string (grammar in the module docstring) into a `PrecisionPlan`.

    `quant_compute` is the compute dtype of a fully quantized group whose part names no ``@dtype``,
    `bf16_audio_compute` / `bf16_llm_compute` that of an audio / llm group whose first float
    component is bf16 and whose part names no ``@dtype`` (`load()` passes the backend policy's).
    A `PrecisionPlan` passes through unchanged. Unknown or malformed names raise ValueError with
    the grammar.
    """
    if isinstance(name, PrecisionPlan):
        return name
    if quant_compute not in FLOAT_KINDS:
        raise ValueError(f"quant_compute must be one of {tuple(FLOAT_KINDS)}, got {quant_compute!r}")
    for arg, v in (("bf16_audio_compute", bf16_audio_compute), ("bf16_llm_compute", bf16_llm_compute)):
        if v not in ("bf16", "fp32"):
            raise ValueError(f"{arg} must be 'bf16' or 'fp32', got {v!r}")
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
    group_compute = {}
    for g, bf16_compute in (("audio", bf16_audio_compute), ("llm", bf16_llm_compute)):
        dtype = compute.get(g) or _default_compute(comps, g, quant_compute)
        if g not in compute and any(not comps[c].quantized for c in GROUPS[g]) and dtype == "bf16":
            dtype = bf16_compute  # stored bf16: the backend policy says what it computes in
        group_compute[g] = dtype
    return PrecisionPlan(**comps, audio_compute=group_compute["audio"], llm_compute=group_compute["llm"])


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


