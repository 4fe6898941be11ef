"""Checkpoint forms on disk and how they become MLX arrays.

``torch_reader`` reads the official ``model.pt`` without torch (restricted unpickler), ``state_dict``
unwraps what FunASR's loader unwraps, ``torch_writer`` writes that form (synthetic models, tests),
``cache`` converts it once into safetensors shards (``aliases`` shares one copy between identical
checkpoints), ``resolve`` validates keys/shapes and finds a directory or hub repo, ``forms`` detects
and opens every supported form (official, quantized, Transformers ``-hf``, mlx-audio).
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file or directory is missing, malformed, unsafe or does not fit the model."""


# File names the forms are told apart by (every form's directory layout is known here).
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
QUANT_CONFIG = "quantization.json"  # a funasr_nano.precision quantized checkpoint
SYNTHETIC_MARKER = "SYNTHETIC_WEIGHTS.txt"  # seeded random weights (funasr_nano.synthetic), in any form
