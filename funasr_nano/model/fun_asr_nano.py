"""The Fun-ASR-Nano network: audio encoder + adaptor + Qwen3 decoder.

Attribute names equal the checkpoint prefixes (`audio_encoder`, `audio_adaptor`, `llm`), so
`sanitize` only has to drop what the network does not hold.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .adaptor import AudioAdaptor
from .config import ModelConfig
from .encoder import SenseVoiceEncoderSmall
from .qwen3 import Qwen3ForCausalLM

# Checkpoint parts that this port does not use (the CTC branch gives timestamps only).
OPTIONAL_PREFIXES = ("ctc_decoder.", "ctc.")


class FunASRNano(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = SenseVoiceEncoderSmall(cfg.encoder)
        self.audio_adaptor = AudioAdaptor(cfg.adaptor)
        self.llm = Qwen3ForCausalLM(cfg.llm)

    def expected_shapes(self) -> dict[str, tuple]:
        return {k: tuple(v.shape) for k, v in tree_flatten(self.parameters())}

    def optional_keys(self) -> tuple:
        # The release stores llm.lm_head.weight although the head is tied to the embedding.
        extra = ("llm.lm_head.",) if self.cfg.llm.tie_word_embeddings else ()
        return OPTIONAL_PREFIXES + extra

    def sanitize(self, weights: dict) -> dict:
        drop = self.optional_keys()
        return {k: v for k, v in weights.items() if not k.startswith(drop)}

    def encode_audio(self, feats: mx.array, lengths: mx.array | None = None, eval_every: int = 0) -> mx.array:
        return self.audio_encoder(feats, lengths, eval_every)

    def adapt(self, enc: mx.array, lengths: mx.array | None = None):
        return self.audio_adaptor(enc, lengths)
