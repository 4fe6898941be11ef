"""Streaming: the pieces `FunASRNanoASR.stream` yields join to the final post-processed text."""

import random

import pytest

import funasr_nano
from funasr_nano.model.prompt import postprocess, stable_text
from funasr_nano.synthetic.signals import speech_like

PIECES = ["/sil", "/", "s", "i", "l", " ", "  ", "\n", "a", "bc", "你", "好", "/si", "l/"]


def test_stable_text_is_a_prefix_of_every_continuation():
    rng = random.Random(0)
    for _ in range(400):
        raw = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 14)))
        final = postprocess(raw)[0]
        for k in range(len(raw) + 1):
            part = stable_text(raw[:k])
            assert final.startswith(part), (raw, k, part, final)
        # what is held back at the end is only a possible "/sil" start or trailing whitespace
        held = final[len(stable_text(raw)):]
        assert held.strip() in ("", "/", "/s", "/si"), (raw, held)


@pytest.mark.parametrize("raw,stable", [("a/si", "a"), ("a/sil", "a"), ("a /sil b", "a b"), ("a  ", "a"),
                                        ("/sil/sil", ""), ("x/", "x")])
def test_stable_text_holds_back_what_may_change(raw, stable):
    assert stable_text(raw) == stable


class _Tok:
    """Stands in for the tokenizer: token i decodes to PIECES-like strings with /sil markers."""

    def __init__(self, inner, table):
        self.inner, self.table = inner, table

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.table[i % len(self.table)] for i in ids)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_stream_pieces_join_to_the_transcription_text(tiny_ckpt):
    asr = funasr_nano.load(tiny_ckpt)
    table = ["a", "/s", "il", " ", "/sil", "  b", "你", "/", "sil c"]
    asr.tokenizer = _Tok(asr.tokenizer, table)
    wav = speech_like(1.5, seed=2)
    gen = asr.stream(wav, max_new_tokens=24, prev_text="前 ")
    pieces = []
    while True:
        try:
            pieces.append(next(gen))
        except StopIteration as done:
            res = done.value
            break
    assert "".join(pieces) == res.text
    assert "/sil" not in res.text and "/sil" not in "".join(pieces)
    assert all(p for p in pieces)
