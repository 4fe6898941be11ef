"""MLX 0.32's microscaling quantization modes (``mxfp4`` groups of 32, ``nvfp4`` groups of 16,
``mxfp8`` groups of 32; ``funasr_nano.precision.plan``) on the same measurements as the affine presets:
end to end, decode rate, memory and fidelity to fp32.

A grid of its own (``common.MODE_PRESETS``): adding these values to ``common.PRESETS`` would change
the params of every existing benchmark, and asv then drops their stored history. A mode the
backend cannot run (MLX raises for it) is skipped with MLX's reason (``common.load_model``), never
replaced by another mode. Each class reuses the implementation of the affine-grid benchmark.
"""

from . import common as c
from . import decode, e2e, fidelity, memory

_GRID = [c.MODE_PRESETS, [1, 4], [5, 10]]
_NAMES = ["preset", "batch", "seconds"]


class TranscribeModes(e2e.Transcribe):
    params = _GRID
    param_names = _NAMES


class DecodeModes(decode.Decode):
    params = _GRID
    param_names = _NAMES


class MemoryModes(memory.Memory):
    params = _GRID
    param_names = _NAMES


class WeightsModes(memory.Weights):
    params = [c.MODE_PRESETS]
    param_names = ["preset"]


class FidelityModes(fidelity.Fidelity):
    params = [c.MODE_PRESETS, [5, 10]]
    param_names = ["preset", "seconds"]
