"""WER / CER on hand-computed examples; corpus-level (micro) aggregation; empty references."""

import math

import pytest

from tests.support.optional import need

jiwer = need("jiwer")

from funasr_nano.evaluation.metrics import ErrorCounts, corpus_counts, error_rate, utterance_counts


def test_wer_hand_computed():
    # the cat sat on the mat / the cat sit on mat: sat->sit (S), second "the" dropped (D)
    [c] = utterance_counts(["the cat sat on the mat"], ["the cat sit on mat"], "wer")
    assert (c.hits, c.substitutions, c.deletions, c.insertions) == (4, 1, 1, 0)
    assert c.ref_units == 6 and c.errors == 2
    assert c.rate == pytest.approx(2 / 6)


def test_wer_insertion_can_exceed_one():
    [c] = utterance_counts(["a b"], ["a b c"], "wer")
    assert (c.hits, c.substitutions, c.deletions, c.insertions) == (2, 0, 0, 1)
    assert c.rate == pytest.approx(0.5)
    [c] = utterance_counts(["a"], ["x y z"], "wer")
    assert c.rate == pytest.approx(3.0)  # 1 S + 2 I over 1 reference word


def test_corpus_level_is_micro_not_macro():
    refs, hyps = ["a b", "c d e"], ["a x", "c d e f"]
    per = utterance_counts(refs, hyps, "wer")
    # utterance 1: 1 S of 2 words; utterance 2: 1 I over 3 words
    assert [p.rate for p in per] == [pytest.approx(0.5), pytest.approx(1 / 3)]
    tot = corpus_counts(per)
    assert (tot.hits, tot.substitutions, tot.deletions, tot.insertions) == (4, 1, 0, 1)
    assert tot.rate == pytest.approx(2 / 5)                # micro: (1 + 1) / (2 + 3) = 0.4
    assert tot.rate != pytest.approx((0.5 + 1 / 3) / 2)    # not the macro mean 0.4167
    assert tot.rate == pytest.approx(jiwer.wer(refs, hyps))  # jiwer's list aggregation agrees


def test_cer_hand_computed():
    # 我爱北京天安门 (7 chars) vs 我爱背景天安门门: 北->背 and 京->景 are 2 S, 5 H, one extra 门 is 1 I
    [c] = utterance_counts(["我爱北京天安门"], ["我爱背景天安门门"], "cer")
    assert (c.hits, c.substitutions, c.deletions, c.insertions) == (5, 2, 0, 1)
    assert c.rate == pytest.approx(3 / 7)


def test_cer_ignores_spaces():
    """AISHELL references are space-segmented; jiwer's cer_default would count the spaces."""
    assert error_rate(["我 爱 北京"], ["我爱北京"], "cer") == 0.0
    assert jiwer.cer("我 爱 北京", "我爱北京") == pytest.approx(2 / 6)  # the pitfall avoided
    [c] = utterance_counts(["我 爱 北京"], ["我爱背景"], "cer")
    assert (c.hits, c.substitutions, c.ref_units) == (2, 2, 4)


def test_cer_deletion():
    [c] = utterance_counts(["今天天气很好"], ["今天很好"], "cer")
    assert (c.hits, c.deletions, c.substitutions, c.insertions) == (4, 2, 0, 0)
    assert c.rate == pytest.approx(2 / 6)


def test_empty_hypothesis_is_all_deletions():
    [c] = utterance_counts(["a b c"], [""], "wer")
    assert (c.deletions, c.rate) == (3, 1.0)


def test_empty_references_skip_and_count():
    refs, hyps = ["", "a b"], ["x y", "a b"]
    per = utterance_counts(refs, hyps, "wer")
    assert per[0].insertions == 2 and per[0].ref_units == 0 and math.isnan(per[0].rate)
    assert corpus_counts(per, "skip").rate == 0.0          # the leaderboard's rule: left out
    assert corpus_counts(per, "count").rate == pytest.approx(2 / 2)  # insertions counted
    with pytest.raises(ValueError):
        corpus_counts(per, "drop")


def test_all_references_empty_gives_nan_not_a_count():
    # jiwer.wer([""], ["a"]) returns the insertion count 1 (not a rate): we return NaN
    assert jiwer.wer([""], ["a"]) == 1
    assert math.isnan(error_rate([""], ["a"], "wer", "count"))
    assert math.isnan(error_rate([""], ["a"], "wer", "skip"))
    assert math.isnan(error_rate([], [], "wer"))


def test_mismatched_lengths_and_metric():
    with pytest.raises(ValueError, match="references"):
        utterance_counts(["a"], [], "wer")
    with pytest.raises(ValueError, match="unknown metric"):
        utterance_counts(["a"], ["a"], "bleu")


def test_error_counts_dict():
    d = ErrorCounts(4, 1, 1, 0).to_dict()
    assert d == {"hits": 4, "substitutions": 1, "deletions": 1, "insertions": 0, "ref_units": 6,
                 "errors": 2, "rate": pytest.approx(2 / 6)}
    assert ErrorCounts().to_dict()["rate"] is None


def test_one_cer_for_a_pair_and_a_corpus():
    """The per-clip CER (bench.fidelity.compare_transcripts reports it) is the corpus CER of one pair:
    whitespace does not count, so a spacing difference costs nothing."""
    from funasr_nano.evaluation.metrics import cer

    assert cer("ab cd", "abcd") == 0.0 == error_rate(["ab cd"], ["abcd"], "cer")
    assert cer("abcd", "abed") == 0.25 == error_rate(["abcd"], ["abed"], "cer")
    assert cer("abc", "abc") == 0.0 and cer("abc", "") == 1.0 and cer("ab", "abcd") == 1.0
    assert cer(" 你好世界 ", "你好世界") == 0.0 and cer("你好世界", "你好") == 0.5
    assert cer("", "") == 0.0 and cer("  ", "") == 0.0 and cer("", "x") == 1.0  # empty reference: 0 or 1
