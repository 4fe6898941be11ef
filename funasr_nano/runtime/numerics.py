"""Overflow checks: a stage that produced inf/nan raises instead of decoding garbage."""

from __future__ import annotations

import mlx.core as mx

_NAMES = {mx.float32: "fp32", mx.bfloat16: "bf16", mx.float16: "fp16"}

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
    return _NAMES.get(dt, str(dt))


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

