"""Text normalisation before scoring: cases from Whisper's / the Open ASR Leaderboard's English
conventions and FunASR's / AISHELL's Mandarin CER conventions."""

import pytest

from funasr_nano.evaluation.normalize import NORMALIZERS, get_normalizer, mandarin, normalizer_info, tokens_for_metric, whisper_basic, whisper_english
from tests.support.optional import requires

whisper = requires("whisper_normalizer")  # the mandarin rule and the registry need nothing else


@pytest.mark.parametrize("raw, expected", [
    # casing and punctuation
    ("HE HOPED THERE WOULD BE STEW FOR DINNER", "he hoped there would be stew for dinner"),
    ("Hello, world! How are you?", "hello world how are you"),
    # contractions (Whisper's EnglishTextNormalizer expands them)
    ("didn't", "did not"),
    ("won't", "will not"),
    ("can't", "can not"),
    ("It's we're I'm", "it is we are i am"),
    ("he'd been there", "he had been there"),
    ("he'd pay", "he would pay"),
    # titles, fillers, bracketed spans, British spelling
    ("Mr. Smith", "mister smith"),
    ("uh, I [laughs] saw it, um", "i saw it"),
    ("the colour of the theatre", "the color of the theater"),
    # numbers: spelled -> digits, currencies and percentages kept
    ("twenty five", "25"),
    ("one hundred and two", "102"),
    ("Mr. Smith said he'd pay $20.50, didn't he?", "mister smith said he would pay $20.50 did not he"),
    ("twenty five percent", "25%"),
    ("the first of May", "the 1st of may"),
    # full-width characters fold to ASCII
    ("ＡＢＣ", "abc"),
    ("", ""),
])
@whisper
def test_whisper_english(raw, expected):
    assert whisper_english(raw) == expected


@whisper
def test_english_reference_and_itn_hypothesis_compare_equal():
    """LibriSpeech references are upper-case spoken form; the model with ITN writes numbers and
    punctuation: the normaliser makes them comparable (the leaderboard's reason for using it)."""
    ref = "SHE DIDN'T KNOW WHERE THE TWENTY FIVE BOOKS HAD GONE"
    hyp = "She didn't know where the 25 books had gone."
    assert whisper_english(ref) == whisper_english(hyp) == "she did not know where the 25 books had gone"


@whisper
def test_whisper_basic_keeps_cjk_drops_punctuation():
    assert whisper_basic("你好，世界！ Hello, World.") == "你好 世界 hello world"


@pytest.mark.parametrize("raw, expected", [
    # punctuation (full- and half-width) removed
    ("今天，天气很好！", "今天天气很好"),
    ("“你好”、《世界》。", "你好世界"),
    ("Hello, 世界!", "HELLO世界"),
    # AISHELL references are word-segmented with spaces
    ("而 对 楼市 成交 抑制 作用 最 大 的 限 购", "而对楼市成交抑制作用最大的限购"),
    # full-width -> half-width (NFKC), including the ideographic space; Latin upper-cased
    ("ＡＢＣ１２３", "ABC123"),
    ("ｈｅｌｌｏ　世界", "HELLO世界"),
    # SenseVoice-style tags dropped (FunASR's normalize_zh)
    ("<|zh|><|NEUTRAL|><|Speech|>你好", "你好"),
    # mixed English stays, as characters
    ("我用 iPhone 打电话。", "我用IPHONE打电话"),
    ("", ""),
])
def test_mandarin(raw, expected):
    assert mandarin(raw) == expected


def test_mandarin_numbers_are_not_converted():
    """The stated choice: AISHELL is run with ITN off; digits are not rewritten, so '9' != '九'."""
    assert mandarin("九点") == "九点"
    assert mandarin("9点") == "9点"
    assert mandarin("9点") != mandarin("九点")


def test_mandarin_reference_and_punctuated_hypothesis_compare_equal():
    ref = "我们 明天 上午 九 点 开会"
    hyp = "我们明天上午九点开会。"
    assert mandarin(ref) == mandarin(hyp)


def test_tokens_for_metric():
    assert tokens_for_metric("a  bc d", "wer") == ["a", "bc", "d"]
    assert tokens_for_metric("我 爱 北京", "cer") == ["我", "爱", "北", "京"]
    with pytest.raises(ValueError, match="unknown metric"):
        tokens_for_metric("x", "bleu")


def test_registry_and_info():
    assert set(NORMALIZERS) >= {"whisper_english", "whisper_basic", "mandarin", "none"}
    assert get_normalizer("none")("  a   b ") == "a b"
    with pytest.raises(ValueError, match="unknown normaliser"):
        get_normalizer("nope")
    assert "whisper-normalizer" in normalizer_info("whisper_english")["package"]
    assert "NFKC" in normalizer_info("mandarin")["description"]
