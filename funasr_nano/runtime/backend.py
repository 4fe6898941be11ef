"""The backend policy: every choice that depends on where MLX runs, in one place.

`load()` resolves one `BackendPolicy` per model (`asr.policy`) from the backend MLX computes on
(``cpu``, ``metal`` or ``cuda``); nothing else in the package asks which device it runs on. The
policy is printed by ``funasr-nano profile`` and ``funasr-nano machine``, recorded in benchmark
results and run records, and can be overridden, field by field, with ``load(..., policy=...)`` or
the ``FUNASR_NANO_POLICY`` environment variable (see `resolve_policy`), so one machine can measure
the alternatives (``funasr-nano bench policy-ab``).

The defaults, per backend, and where each comes from:

=====================  ==============  ================  ==============
field                  cpu             metal             cuda
=====================  ==============  ================  ==============
frontend               numpy           mlx               mlx
compiled_decode_rows   3               0                 0
step_ops               tables          fast              fast
dequant_min_rows       4               never             never
dequant_chunked        yes             no                no
quant_compute          fp32            bf16              bf16
reference_blas_check   yes             no                no
encoder_eval_every     0               10                10
bf16_audio_compute     fp32            bf16              bf16
bf16_llm_compute       fp32            bf16              bf16
fsmn_conv              no              yes               yes
=====================  ==============  ================  ==============

* ``cpu`` (measured on the project's 2-core Linux machine, MLX 0.32 with OpenBLAS): the float64
  numpy frontend is the parity reference and as fast as MLX's there; the compiled fixed-buffer step
  saves the per-step graph building below 4 rows; MLX's CPU ``quantized_matmul`` is scalar code
  whose cost grows with the row count, so quantized layers dequantize block by block and use the
  OpenBLAS GEMM from 4 rows (crossover 2-4 rows); quantized presets compute in float32 because
  bf16 ``quantized_matmul`` is 8-15x slower and dense bf16 GEMMs have no BLAS path. For the same
  reason a bf16 audio group (``bf16``, ``q4-llm+bf16-audio``, ...) computes in float32: its
  matrices stay bf16 in memory and MLX upcasts each one at its matmul (then the OpenBLAS sgemm),
  its norms, biases and FSMN taps are float32. MLX 0.32's CPU bf16 GEMM is a SIMD fallback
  without BLAS: 167x512 @ 512x1536 (one encoder layer's q/k/v, 10 s clip) takes 49 ms in bf16
  vs 1.6 ms in float32 with the bf16 matrix upcast, and the real-shaped encoder + adaptor on a
  10 s clip 19.1 s vs 1.07 s (float32 weights: 0.97 s; docs/measurements/cpu-2core-2026-12-02/
  bf16-encoder.md). mlx-audio's bf16 form computes its encoder the same way. The llm group
  likewise (``bf16_llm_compute``): a 10 s clip's prefill takes 6.6 s in bf16 vs 1.0 s in float32
  over the bf16 matrices, and a decoded token 475 vs 457 ms (the upcast of each matrix from memory
  costs what the bf16 SIMD product does; float32 weights: 69 ms), 10 s clip, 40 tokens, 25.9 vs
  19.4 s end to end (docs/measurements/cpu-2core-2026-12-02/bf16-llm.md). So ``bf16`` on the CPU
  is a bf16-*storage* preset (half the weight memory of ``fp32``, slower decode); its canonical
  name says so (``bf16@fp32``).
* ``metal`` (NOT measured here: the project has no Apple hardware). The defaults follow MLX's own
  practice on Apple GPUs, as mlx-lm ships it: `nn.QuantizedLinear` always calls
  ``quantized_matmul`` (Metal picks ``qmv``/``qmm`` kernels by row count; ml-explore/mlx #3086 and
  #4265 measured 4-bit faster than fp16 from 16 rows), quantized models compute in the activation
  dtype (bf16), and the decode loop is mlx-lm's: a growing KV cache, the next step queued with
  ``mx.async_eval`` before the host reads the current token, no ``mx.compile`` of the step. The
  frontend runs on the GPU as mlx-whisper's log-mel does. A batch's audio encoder is evaluated
  every 10 layers, as mlx-lm evaluates a long prompt chunk by chunk to bound memory (measured on
  CUDA, below; Metal also keeps a command buffer's temporaries until it completes).
  ``funasr-nano bench policy-ab`` measures each of these both ways on a Mac.
* ``cuda`` (measured on the lent H100/H200, MLX 0.32.4; docs/measurements/h200-cuda-2026-12-02):
  the growing-cache step beats the compiled step at every batch size (H200 bf16 batch 1 5.3 vs
  7.4 ms/token, batch 8 11.9 vs 15.1); quantized presets compute in bf16 (batch 8 q4 6.5 vs 10.7
  ms/token with fp32 compute, batch 32 8.6 vs 12.9) and never dequantize: with bf16 activations
  MLX CUDA's ``quantized_matmul`` beats dequantize-then-GEMM at batch 32 (q4 8.6 vs 10.5 ms per
  step, q8 7.3 vs 12.3; bf16 8.8), which the earlier float32-compute measurement (H100) had
  reversed. The encoder of a batch is evaluated every 10 layers: evaluated as one 70-layer graph,
  bf16 batch 32 of 30 s clips held 10.7 GB of attention temporaries (4.1 GB every 10 layers,
  1.1 GB every layer; no measurable time cost from batch 8 up). The encoder's FSMN memory is one
  grouped conv1d per layer instead of 11 shifted multiply-adds (``fsmn_conv``): ~1500 fewer kernel
  launches for 70 layers; batch-1 encoder on a 10 s clip 24.2 vs 37.6 ms (bf16, H200;
  docs/measurements/h200-cuda-2026-12-02 section 8). Metal takes the same choice unmeasured (fewer
  launches help any GPU); the CPU keeps the shifted form (1.0 vs 2.7 ms per layer,
  docs/measurements/cpu-2core-2026-12-02/bf16-encoder.md).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import mlx.core as mx

BACKENDS = ("cpu", "metal", "cuda")
ENV_VAR = "FUNASR_NANO_POLICY"
FRONTENDS = ("numpy", "mlx")
STEP_OPS = ("tables", "fast")
COMPUTE_DTYPES = ("fp32", "bf16", "fp16")
BF16_COMPUTE = ("bf16", "fp32")


class PolicyError(ValueError):
    """An unknown backend, field or value in a policy override."""


@dataclass(frozen=True)
class BackendPolicy:
    """Backend-specific runtime choices (module docstring: the table and its sources).

    frontend              fbank + LFR in float64 numpy ("numpy") or float32 MLX on the device ("mlx")
    compiled_decode_rows  batches of up to this many rows decode with the compiled fixed-buffer
                          step (`fast_decode.py`); larger ones, and 0, use the growing KV cache
    step_ops              RoPE / attention inside the compiled step: shared cos/sin "tables" and
                          grouped-query attention (fastest on the CPU), or MLX's "fast" kernels
    dequant_min_rows      quantized layers called with at least this many rows dequantize and use
                          the dense matmul instead of ``quantized_matmul``; None: never
    dequant_chunked       dequantize large matrices block by block (bounds the float copy's memory
                          where each block can be evaluated eagerly: the CPU)
    quant_compute         compute dtype of quantized components when a preset names none (``q4``
                          means ``q4@<quant_compute>``; ``@fp32`` / ``@bf16`` in a preset win)
    reference_blas_check  warn at load when MLX's CPU backend runs on the reference BLAS
    encoder_eval_every    for batches (2+ clips), evaluate the audio encoder's activations every this
                          many layers (0: the whole encoder as one graph); bounds the temporaries a
                          GPU holds for a large batch (one clip's are small, and each evaluation
                          costs a device round trip)
    bf16_audio_compute    compute dtype of an audio group (encoder + adaptor) stored in bf16 when the
                          preset names no ``@dtype`` for it: "bf16" (as stored), or "fp32" (matrices
                          stay bf16 and are upcast at each matmul; norms, biases, FSMN taps and the
                          activations are float32; the plan's name then ends ``-audio@fp32``).
                          Applied at load, like ``quant_compute``
    bf16_llm_compute      the same for the llm group (decoder layers + embedding) stored in bf16
    fsmn_conv             compute each encoder layer's FSMN memory as one grouped conv1d instead of
                          K shifted multiply-adds (`funasr_nano.model.encoder.SANMAttention`)
    """

    backend: str
    frontend: str
    compiled_decode_rows: int
    step_ops: str
    dequant_min_rows: int | None
    dequant_chunked: bool
    quant_compute: str
    reference_blas_check: bool
    encoder_eval_every: int = 0
    bf16_audio_compute: str = "bf16"
    bf16_llm_compute: str = "bf16"
    fsmn_conv: bool = False
    overridden: tuple = field(default=(), compare=False)  # fields set by an override, for records

    def __post_init__(self):
        checks = (("backend", BACKENDS), ("frontend", FRONTENDS), ("step_ops", STEP_OPS),
                  ("quant_compute", COMPUTE_DTYPES), ("bf16_audio_compute", BF16_COMPUTE),
                  ("bf16_llm_compute", BF16_COMPUTE))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise PolicyError(f"policy field {name}={getattr(self, name)!r}: choose one of {allowed}")
        if not isinstance(self.compiled_decode_rows, int) or self.compiled_decode_rows < 0:
            raise PolicyError(f"compiled_decode_rows must be an integer >= 0, got {self.compiled_decode_rows!r}")
        if not isinstance(self.encoder_eval_every, int) or self.encoder_eval_every < 0:
            raise PolicyError(f"encoder_eval_every must be an integer >= 0, got {self.encoder_eval_every!r}")
        if self.dequant_min_rows is not None and (not isinstance(self.dequant_min_rows, int)
                                                  or self.dequant_min_rows < 1):
            raise PolicyError(f"dequant_min_rows must be an integer >= 1 or None, got {self.dequant_min_rows!r}")

    # ----- decisions ---------------------------------------------------------------------
    def dense_path(self, rows: int) -> bool:
        """Whether a quantized layer called with `rows` rows dequantizes and uses the dense matmul."""
        return self.dequant_min_rows is not None and rows >= self.dequant_min_rows

    def use_compiled(self, rows: int, quantized: bool) -> bool:
        """Whether a batch of `rows` decodes with the compiled step. Never where quantized layers
        would take the dense path: it evaluates block by block, which a traced function cannot."""
        if rows > self.compiled_decode_rows:
            return False
        return not (quantized and self.dense_path(rows))

    # ----- records -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "overridden"}
        d["overridden"] = list(self.overridden)
        return d

    def spec(self) -> str:
        """The override string that rebuilds this policy (`resolve_policy(p.spec())` == p)."""
        items = [self.backend] + [f"{k}={_fmt(getattr(self, k))}" for k in FIELDS]
        return ",".join(items)

    def summary(self) -> str:
        """One line for tables and footers."""
        comp = (f"compiled<={self.compiled_decode_rows} rows" if self.compiled_decode_rows else "growing-cache")
        deq = "never" if self.dequant_min_rows is None else f">={self.dequant_min_rows} rows"
        out = (f"{self.backend}: frontend {self.frontend}, decode {comp} ({self.step_ops} ops), "
               f"dequantize {deq}{' chunked' if self.dequant_chunked else ''}, "
               f"quantized compute {self.quant_compute}"
               + (f", encoder evaluated every {self.encoder_eval_every} layers" if self.encoder_eval_every else "")
               + (f", bf16 audio computes {self.bf16_audio_compute}" if self.bf16_audio_compute != "bf16" else "")
               + (f", bf16 llm computes {self.bf16_llm_compute}" if self.bf16_llm_compute != "bf16" else "")
               + (", FSMN as conv1d" if self.fsmn_conv else ""))
        if self.overridden:
            out += f" [overridden: {', '.join(self.overridden)}]"
        return out


FIELDS = tuple(f.name for f in dataclasses.fields(BackendPolicy) if f.name not in ("backend", "overridden"))

_DEFAULTS = {
    "cpu": dict(frontend="numpy", compiled_decode_rows=3, step_ops="tables", dequant_min_rows=4,
                dequant_chunked=True, quant_compute="fp32", reference_blas_check=True, bf16_audio_compute="fp32",
                bf16_llm_compute="fp32", fsmn_conv=False),
    "metal": dict(frontend="mlx", compiled_decode_rows=0, step_ops="fast", dequant_min_rows=None,
                  dequant_chunked=False, quant_compute="bf16", reference_blas_check=False, encoder_eval_every=10,
                  fsmn_conv=True),
    "cuda": dict(frontend="mlx", compiled_decode_rows=0, step_ops="fast", dequant_min_rows=None,
                 dequant_chunked=False, quant_compute="bf16", reference_blas_check=False, encoder_eval_every=10,
                 fsmn_conv=True),
}

# What each default rests on, for `funasr-nano machine` and the policy-ab table.
EVIDENCE = {
    "cpu": "measured on the 2-core Linux CPU machine (docs/measurements/cpu-2core-*)",
    "metal": "NOT measured here (no Apple hardware): MLX's own Metal practice (mlx-lm); "
             "check with `funasr-nano bench policy-ab`",
    "cuda": "measured on the lent H100/H200 (docs/measurements/h1*-cuda-*)",
}


def _fmt(v) -> str:
    if v is None:
        return "never"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def default_policy(backend: str) -> BackendPolicy:
    if backend not in _DEFAULTS:
        raise PolicyError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    return BackendPolicy(backend=backend, **_DEFAULTS[backend])


def detect_backend() -> str:
    """The backend of MLX's default device: "cpu", "metal" or "cuda"."""
    if mx.default_device().type == mx.cpu:
        return "cpu"
    metal = getattr(mx, "metal", None)
    if metal is not None and metal.is_available():
        return "metal"
    return "cuda"


def device_label() -> str:
    """MLX's default device as MLX prints it (``Device(gpu, 0)``), for records."""
    return str(mx.default_device())


def _parse_value(name: str, raw: str):
    s = raw.strip().lower()
    if name in ("dequant_min_rows",):
        if s in ("never", "none", "off", "0"):
            return None
        return _int(name, s)
    if name in ("compiled_decode_rows", "encoder_eval_every"):
        if s in ("never", "none", "off"):
            return 0
        return _int(name, s)
    if name in ("dequant_chunked", "reference_blas_check", "fsmn_conv"):
        if s in ("1", "yes", "true", "on"):
            return True
        if s in ("0", "no", "false", "off"):
            return False
        raise PolicyError(f"policy field {name} takes yes/no, got {raw!r}")
    if name in ("quant_compute", "bf16_audio_compute", "bf16_llm_compute"):
        return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(s, s)
    return s


def _int(name, s):
    try:
        return int(s)
    except ValueError:
        raise PolicyError(f"policy field {name} takes an integer, got {s!r}") from None


def parse_overrides(spec) -> tuple[str | None, dict]:
    """``"metal"``, ``"dequant_min_rows=8,quant_compute=fp32"`` or ``"cuda,compiled_decode_rows=4"``
    (or a dict) -> (backend or None, {field: value})."""
    if spec is None:
        return None, {}
    if isinstance(spec, dict):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        items = []
        for part in str(spec).replace(";", ",").split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                items.append(("backend", part))
                continue
            k, _, v = part.partition("=")
            items.append((k.strip().replace("-", "_"), v))
    backend, fields = None, {}
    for k, v in items:
        if k == "backend":
            backend = str(v).strip().lower()
            if backend not in BACKENDS:
                raise PolicyError(f"unknown backend {v!r} in policy {spec!r}; choose one of {BACKENDS}")
            continue
        if k not in FIELDS:
            raise PolicyError(f"unknown policy field {k!r} in {spec!r}; fields: {', '.join(FIELDS)}")
        fields[k] = _parse_value(k, v) if isinstance(v, str) else v
    return backend, fields


def resolve_policy(policy=None, backend: str | None = None, environ=None) -> BackendPolicy:
    """The policy for this process: the defaults of `backend` (default: the one MLX computes on),
    then the ``FUNASR_NANO_POLICY`` overrides, then `policy` (a `BackendPolicy`, returned as is, or
    an override string / dict as `parse_overrides` reads them). Naming a backend in an override
    starts from that backend's defaults, so a CPU machine can run the Metal or CUDA choices."""
    if isinstance(policy, BackendPolicy):
        return policy
    env = os.environ if environ is None else environ
    env_backend, env_fields = parse_overrides(env.get(ENV_VAR) or None)
    arg_backend, arg_fields = parse_overrides(policy)
    base = default_policy(arg_backend or env_backend or backend or detect_backend())
    fields = {**env_fields, **arg_fields}
    changed = tuple(k for k in FIELDS if k in fields and fields[k] != getattr(base, k))
    return dataclasses.replace(base, **fields, overridden=changed)


__all__ = ["BackendPolicy", "PolicyError", "BACKENDS", "FIELDS", "ENV_VAR", "EVIDENCE", "default_policy",
           "detect_backend", "device_label", "parse_overrides", "resolve_policy"]
