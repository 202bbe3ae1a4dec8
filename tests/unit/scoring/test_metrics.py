"""Metrics against the published edge cases of the evaluations they reproduce."""

import pytest

from harness.scoring.metrics import (
    anls,
    cider_d,
    contains,
    exact_match,
    extract_choice,
    multiple_choice,
    normalize_vqa,
    relaxed_accuracy,
    score_answers,
    vqa_accuracy,
)


@pytest.mark.parametrize("raw, normalised", [
    ("Black.", "black"), ("two", "2"), ("1,000", "1000"), ("3.5", "3.5"), ("The dog", "dog"),
    ("dont", "don't"), ("  yes!  ", "yes"), ("a cat", "cat"), ("ten", "10"), ("none", "0"),
])
def test_vqa_normalisation(raw, normalised):
    assert normalize_vqa(raw) == normalised


def test_vqa_accuracy_ten_annotator_rule():
    assert vqa_accuracy("two", ["2"] * 10) == 1.0
    assert vqa_accuracy("2", ["2", "2"] + ["3"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("2", ["2", "2", "2"] + ["3"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("Black.", ["black"]) == 1.0  # single reference: normalised exact match
    assert vqa_accuracy("white", ["black"]) == 0.0


def test_anls_threshold_and_best_reference():
    assert anls("hello", ["hello"]) == 1.0
    assert anls("helo", ["hello"]) == pytest.approx(0.8)
    assert anls("xyz", ["hello"]) == 0.0  # distance ≥ 0.5 → 0
    assert anls(" Hello  World ", ["x", "hello world"]) == 1.0


def test_relaxed_accuracy_chartqa():
    assert relaxed_accuracy("3.5%", ["0.035"]) == 1.0
    assert relaxed_accuracy("1,000", ["1000"]) == 1.0
    assert relaxed_accuracy("104", ["100"]) == 1.0
    assert relaxed_accuracy("106", ["100"]) == 0.0
    assert relaxed_accuracy("Yes", ["yes"]) == 1.0
    assert relaxed_accuracy("0", ["0"]) == 1.0


def test_contains_exact_and_choice():
    assert contains("The word is ENERGY here", ["energy"]) == 1.0
    assert contains("nothing", ["energy"]) == 0.0
    assert exact_match("The Red.", ["red"]) == 1.0
    assert extract_choice("(B) square") == "B"
    assert extract_choice("The answer is C") == "C"
    assert extract_choice("d") == "D"
    assert multiple_choice("B. square", ["B"]) == 1.0 and multiple_choice("A", ["B"]) == 0.0


def test_cider_rewards_matching_captions_and_is_corpus_level():
    refs = [["a red circle and a blue square"], ["a green triangle and a black star"], ["two yellow squares"]]
    good = cider_d(["a red circle and a blue square", "a green triangle and a black star", "two yellow squares"],
                   refs)
    bad = cider_d(["nothing here", "random words", "more noise"], refs)
    assert all(g > 5 for g in good) and all(b == 0 for b in bad)
    assert all(0 <= s <= 1 for s in score_answers("cider", ["a red circle"] * 3, refs))
