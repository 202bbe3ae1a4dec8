"""Only the answer is scored: thought blocks, markdown, trailing periods; multiple choice; CIDEr and K."""

import pytest

from harness.scoring.answers import clean_answer, split_thinking, truncated_share, truncated_share_by_task
from harness.scoring.metrics import cider_d, extract_choice, multiple_choice, score_answers


@pytest.mark.parametrize("raw, answer", [
    ("<|channel>thought\n<channel|>30", "30"),  # Gemma 4 with thinking off: an empty block
    ("<|channel>thought\nBar C is the tallest, 30.<channel|>**30**", "30"),
    ("thought\n30", "30"),  # a bare role label (vLLM's gemma4_utils strips it too)
    ("The value is 30.<turn|>", "The value is 30"),
    ("__Paris__.", "Paris"),
    ("***`x_1`***", "x_1"),
    ("3.5.", "3.5"),
    ("3.5", "3.5"),
    ("file_name_v2", "file_name_v2"),
    ("2*3*4", "2*3*4"),
    ("Wait...", "Wait..."),
    ("<|channel>thought\nstill thinking when max_tokens hit", ""),  # no answer came
    ("", ""),
    (None, ""),
])
def test_clean_answer(raw, answer):
    assert clean_answer(raw) == answer


def test_split_thinking_keeps_the_thought_apart():
    assert split_thinking("<|channel>thought\nlook at bar C<channel|>30") == ("look at bar C", "30")
    assert split_thinking("30") == (None, "30")


@pytest.mark.parametrize("metric, refs, variants", [
    ("anls", ["May 10"], ["May 10", "**May 10**", "May 10.", "<|channel>thought\n<channel|>May 10"]),
    ("relaxed_accuracy", ["30"], ["30", "**30**", "30.", "_30_"]),
    ("vqa_accuracy", ["nokia"] * 10, ["nokia", "**Nokia**", "Nokia."]),
    ("exact_match", ["red"], ["red", "*red*", "Red."]),
    ("contains", ["WORD"], ["word", "**WORD**."]),
    ("multiple_choice", ["B", "whale"], ["B", "**B**", "B.", "(B)", "Answer: B", "whale", "Whale."]),
])
def test_markdown_and_a_trailing_period_never_change_a_score(metric, refs, variants):
    assert score_answers(metric, variants, [refs] * len(variants)) == [1.0] * len(variants)


@pytest.mark.parametrize("answer, choice", [
    ("A", "A"), ("A.", "A"), ("(A)", "A"), ("A)", "A"), ("Answer: A", "A"), ("answer is (C).", "C"),
    ("The answer is C", "C"), ("B. larva", "B"), ("d", "D"),
    ("A dog is sitting on the bench", None), ("A whale", None), ("I think B", None), ("Because C is true", None),
])
def test_only_the_usual_answer_forms_name_an_option(answer, choice):
    assert extract_choice(answer) == choice


def test_multiple_choice_accepts_the_option_text_and_nothing_else():
    refs = ["A", "a dog on a bench"]
    assert multiple_choice("A dog is sitting on the bench", refs) == 0.0  # the article is not option A
    assert multiple_choice("A dog on a bench", refs) == 1.0  # the option's own text
    assert multiple_choice("a dog on a bench.", refs) == 1.0
    assert multiple_choice("B", refs) == 0.0 and multiple_choice("(a)", refs) == 1.0
    assert multiple_choice("B", ["B"]) == 1.0 and multiple_choice("bench", ["A"]) == 0.0


def test_cider_of_the_same_answers_does_not_depend_on_samples_per_item():
    refs = [["a dog sitting on a bench", "a brown dog on a bench", "dog on a park bench"],
            ["two cats on a red couch", "cats asleep on a sofa", "a pair of cats on a couch"],
            ["a man riding a wave on a surfboard", "a surfer on a big wave", "man surfing in the ocean"]]
    answers = ["a dog on a bench", "two cats on a couch", "a man surfing a wave"]
    once = cider_d(answers, refs)
    thrice = cider_d(answers * 3, refs * 3)  # --samples 3: every item (and its references) three times
    assert thrice == pytest.approx(once * 3) and once[0] > 0


def test_truncated_share_per_task():
    assert truncated_share(["stop", "length", "stop", "length"]) == 0.5 and truncated_share([]) is None
    assert truncated_share_by_task(["doc", "doc", "chart"], ["length", "stop", "stop"]) == {"chart": 0.0, "doc": 0.5}


def test_verbose_sentences_score_as_lmms_eval_scores_them():
    """lmms-eval extracts nothing from a sentence for ChartQA/DocVQA/VQA; OCRBench's contains finds it."""
    sentence = "The value of bar C is 30."
    assert score_answers("relaxed_accuracy", [sentence], [["30"]]) == [0.0]
    assert score_answers("anls", [sentence], [["30"]]) == [0.0]
    assert score_answers("vqa_accuracy", [sentence], [["30"] * 10]) == [0.0]
    assert score_answers("contains", [sentence], [["30"]]) == [1.0]
