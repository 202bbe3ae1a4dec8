"""What of a model's output is the answer: pure functions applied before every metric.

Real servers send more than the answer. Gemma 4 wraps its thinking in `<|channel>thought\\n …
<channel|>` (an empty block even with thinking off, unless the server's reasoning parser moves it
into `reasoning_content`, which the client records apart and which is never scored); answers come
in markdown (`**30**`) and as sentences ending with a period. `clean_answer` removes exactly that
— the thought block, the turn-end tokens, markdown emphasis and code ticks, one trailing period
(never a decimal point) and surrounding whitespace — and nothing else, so the metric's own
normalisation (lmms-eval's) decides the rest. Where this makes us differ from lmms-eval:
lmms-eval scores the raw text, so "**30**" or "30." count as wrong under ChartQA's relaxed
accuracy and lose a little under ANLS there; here they do not.

`truncated_share` is the one definition of "answers cut by max_tokens" (finish_reason "length")
used by the summary: a truncated answer is a quality loss caused by a setting, not by the model."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

THOUGHT_START, THOUGHT_END = "<|channel>", "<channel|>"
END_TOKENS = ("<turn|>", "<eos>", "<end_of_turn>")
# Emphasis opens and closes at word edges: "2*3*4" and "file_name_v2" are not markdown.
_EMPHASIS = re.compile(r"(?<!\w)(\*\*|__|\*|_|`)(?=\S)(.+?)(?<=\S)\1(?!\w)", re.DOTALL)
_TRAILING_PERIOD = re.compile(r"(?<!\.)\.\s*$")  # one final period; "…" and "e.g.." are left alone


def split_thinking(text: str) -> tuple[str | None, str]:
    """(thinking, answer) of a Gemma 4 output whose thought block stayed in the content.
    An unterminated block (cut by max_tokens while thinking) leaves no answer."""
    if THOUGHT_END in text:
        thought, answer = text.split(THOUGHT_END, 1)
        thought = thought.split(THOUGHT_START, 1)[1] if THOUGHT_START in thought else thought
        return thought.strip().removeprefix("thought\n").strip(), answer
    if THOUGHT_START in text:
        before, thought = text.split(THOUGHT_START, 1)
        return thought.strip().removeprefix("thought\n").strip(), before
    return None, text.removeprefix("thought\n")


def clean_answer(text: str | None) -> str:
    """The answer to score: no thought block, no turn-end token, no markdown emphasis, no
    trailing period, no surrounding whitespace."""
    if not text:
        return ""
    answer = split_thinking(text)[1].strip()
    for token in END_TOKENS:
        answer = answer.removesuffix(token).strip()
    previous = None
    while previous != answer:  # nested emphasis: ***x***, **`x`**
        previous, answer = answer, _EMPHASIS.sub(r"\2", answer)
    return _TRAILING_PERIOD.sub("", answer.strip()).strip()


def is_truncated(finish_reason: str | None) -> bool:
    return finish_reason == "length"


def truncated_share(finish_reasons: Iterable[str | None]) -> float | None:
    """Share of answers the server cut at max_tokens; None when there are no answers."""
    reasons = list(finish_reasons)
    return sum(map(is_truncated, reasons)) / len(reasons) if reasons else None


def truncated_share_by_task(tasks: Sequence[str], finish_reasons: Sequence[str | None]) -> dict[str, float]:
    """truncated_share per task (tasks and finish reasons of the same final answers, in order)."""
    grouped: dict[str, list[str | None]] = {}
    for task, reason in zip(tasks, finish_reasons, strict=True):
        grouped.setdefault(str(task), []).append(reason)
    return {task: truncated_share(reasons) for task, reasons in sorted(grouped.items())}
