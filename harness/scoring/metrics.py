"""Standard image-to-text metrics, one registry keyed by the suite's metric name.

Every per-answer score is in [0, 1], so scores of different tasks can be averaged.

| name              | reproduces                                                               |
|-------------------|--------------------------------------------------------------------------|
| vqa_accuracy      | VQAv2 / TextVQA evaluation (vqaEval.py): answer normalisation and the     |
|                   | 10-annotator rule min(1, matches/3) averaged over leave-one-out subsets  |
| anls              | DocVQA ANLS: 1 - normalised Levenshtein distance, best reference,        |
|                   | 0 when the distance is ≥ 0.5                                             |
| relaxed_accuracy  | ChartQA (pix2struct `relaxed_correctness`): numbers within 5 % of the     |
|                   | target ("%" means /100), otherwise case-insensitive exact match          |
| contains          | OCRBench: the lower-cased reference occurs in the lower-cased answer     |
| exact_match       | normalised exact match (VQA normalisation)                               |
| multiple_choice   | the option's letter ("B", "(B)", "B.", "B. text", "Answer: B") or the   |
|                   | option's text; nothing else (AI2D / ScienceQA / MMMU in lmms-eval)       |
| cider             | CIDEr-D (pycocoevalcap) over the suite, /10 to land in [0, 1]            |

Every prediction first goes through `answers.clean_answer` (thought block, markdown emphasis,
trailing period), so the metrics see the answer, not its wrapping.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

from rapidfuzz.distance import Levenshtein

from harness.scoring.answers import clean_answer

# --- VQA answer normalisation (vqaEval.py of the VQA / TextVQA evaluation) ----------------
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
               ",", "?", "!"]
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # a period not inside a number (as in vqaEval.py)
COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _process_punctuation(text: str) -> str:
    out = text
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or re.search(COMMA_STRIP, text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out)


def _process_digits_articles(text: str) -> str:
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_vqa(answer: str) -> str:
    """The VQA evaluation's answer normalisation: whitespace, punctuation (decimals and
    in-number commas survive), lower case, number words to digits, articles, contractions."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digits_articles(_process_punctuation(text))


def vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """min(1, #matching annotators / 3), averaged over the 10 leave-one-out subsets (VQAv2).
    With one reference this is normalised exact match."""
    pred = normalize_vqa(prediction)
    refs = [normalize_vqa(r) for r in references]
    if len(refs) == 1:
        return float(pred == refs[0])
    scores = []
    for i in range(len(refs)):
        others = refs[:i] + refs[i + 1:]
        scores.append(min(1.0, sum(r == pred for r in others) / 3.0))
    return sum(scores) / len(scores)


def exact_match(prediction: str, references: Sequence[str]) -> float:
    pred = normalize_vqa(prediction)
    return float(any(pred == normalize_vqa(r) for r in references))


def anls(prediction: str, references: Sequence[str], threshold: float = 0.5) -> float:
    """DocVQA's ANLS for one question: best over references of 1 - NL, 0 when NL ≥ threshold."""
    pred = " ".join(prediction.strip().lower().split())
    best = 0.0
    for ref in references:
        ref = " ".join(ref.strip().lower().split())
        distance = Levenshtein.normalized_distance(pred, ref)
        best = max(best, 0.0 if distance >= threshold else 1.0 - distance)
    return best


def _to_float(text: str) -> float | None:
    text = text.strip().replace(",", "")
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, references: Sequence[str], tolerance: float = 0.05) -> float:
    """ChartQA: a numeric answer within 5 % of the target counts (percent signs handled),
    otherwise exact match ignoring case; best over references."""
    pred = prediction.strip().rstrip(".")
    for ref in references:
        target, value = _to_float(ref), _to_float(pred)
        if target is not None and value is not None:
            if target == 0:
                if value == 0:
                    return 1.0
            elif abs(value - target) / abs(target) <= tolerance:
                return 1.0
        elif pred.lower() == ref.strip().lower():
            return 1.0
    return 0.0


def _fold_fullwidth(text: str) -> str:
    """Fullwidth ASCII (U+FF01..FF5E) and the ideographic space to ASCII, as lmms-eval's OCRBench."""
    return "".join(" " if c == "\u3000" else chr(ord(c) - 0xFEE0) if "\uff01" <= c <= "\uff5e" else c for c in text)


def contains(prediction: str, references: Sequence[str]) -> float:
    """OCRBench: the reference, lower-cased and stripped, occurs in the answer (fullwidth folded).
    lmms-eval also drops every space for its HME100k formulas; we do not (no dataset column here)."""
    pred = _fold_fullwidth(prediction).lower().strip().replace("\n", " ")
    return float(any(_fold_fullwidth(r).lower().strip().replace("\n", " ") in pred for r in references if r.strip()))


# The forms of a chosen option, and nothing else: "B", "B.", "(B)", "B)", "B: …"/"B. …" (lmms-eval's
# AI2D/ScienceQA filters take a letter followed by "." at the start), "Answer: B", "The answer is (B)".
# A sentence that merely starts with the article "A" is not option A.
_CHOICE = [
    re.compile(r"^\(?([A-Za-z])\)?[.:)]?$"),
    re.compile(r"^\(?([A-Z])[.):]\s+\S"),
    re.compile(r"^(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*\(?([A-Z])\)?[.)]?$",
               re.IGNORECASE),
]


def extract_choice(prediction: str) -> str | None:
    text = prediction.strip()
    for pattern in _CHOICE:
        match = pattern.match(text)
        if match:
            return match.group(1).upper()
    return None


def multiple_choice(prediction: str, references: Sequence[str]) -> float:
    """References: the correct letter, then (optionally) the correct option's text. The answer is
    right when it names that letter in one of the accepted forms, or is that option's text
    (VQA-normalised: case, articles, punctuation)."""
    if not references:
        return 0.0
    letter = references[0].strip().upper()[:1]
    choice = extract_choice(prediction)
    if choice is not None:
        return float(choice == letter)
    texts = [normalize_vqa(t) for t in references[1:] if t.strip()]
    return float(bool(texts) and normalize_vqa(prediction) in texts)


# --- CIDEr-D (corpus level) ---------------------------------------------------------------
# Tokenisation (no Java PTB tokenizer): lower case, every character that is not a letter,
# digit or apostrophe becomes a space, split on whitespace.
_TOKEN_SPLIT = re.compile(r"[^a-z0-9']+")


def caption_tokens(text: str) -> list[str]:
    return [t for t in _TOKEN_SPLIT.split(text.lower()) if t]


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def cider_d(predictions: Sequence[str], references: Sequence[Sequence[str]], sigma: float = 6.0) -> list[float]:
    """CIDEr-D per answer, as pycocoevalcap's CiderD: n = 1..4, TF-IDF vectors, clipped candidate
    counts, Gaussian length penalty, ×10. Divide by 10 for a [0, 1]-ish score.

    Document frequencies come from the distinct reference sets, each counted once: with
    `--samples K` every item's references arrive K times, and counting them K times would make
    the same answer score differently for different K (pycocoevalcap sees each image once)."""
    refs_ngrams = [[[_ngrams(caption_tokens(r), n) for n in range(1, 5)] for r in refs] for refs in references]
    distinct = {tuple(refs): item for refs, item in zip(references, refs_ngrams, strict=True)}
    df: Counter = Counter()
    for item in distinct.values():
        for n in range(4):
            df.update(set().union(*(set(r[n]) for r in item)) if item else set())
    log_n = math.log(float(max(len(distinct), 1)))

    def vector(counts: list[Counter]) -> tuple[list[dict], list[float], int]:
        vec, norms = [], []
        for n in range(4):
            v = {g: tf * (log_n - math.log(max(1.0, df[g]))) for g, tf in counts[n].items()}
            vec.append(v)
            norms.append(math.sqrt(sum(x * x for x in v.values())))
        return vec, norms, sum(counts[0].values())

    scores = []
    for pred, item in zip(predictions, refs_ngrams, strict=True):
        cand_counts = [_ngrams(caption_tokens(pred), n) for n in range(1, 5)]
        vec_c, norm_c, len_c = vector(cand_counts)
        total = [0.0] * 4
        for ref_counts in item:
            vec_r, norm_r, len_r = vector(ref_counts)
            delta = len_c - len_r
            for n in range(4):
                dot = sum(min(vec_c[n][g], vec_r[n][g]) * vec_r[n][g] for g in vec_c[n] if g in vec_r[n])
                if norm_c[n] and norm_r[n]:
                    total[n] += dot / (norm_c[n] * norm_r[n]) * math.exp(-(delta ** 2) / (2 * sigma ** 2))
        score = sum(t / max(len(item), 1) for t in total) / 4.0 * 10.0
        scores.append(score)
    return scores


PerAnswer = Callable[[str, Sequence[str]], float]
PER_ANSWER: dict[str, PerAnswer] = {
    "vqa_accuracy": vqa_accuracy, "anls": anls, "relaxed_accuracy": relaxed_accuracy,
    "contains": contains, "exact_match": exact_match, "multiple_choice": multiple_choice,
}
CORPUS = {"cider"}
METRICS = sorted(set(PER_ANSWER) | CORPUS)


def score_answers(metric: str, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
    """Scores in [0, 1] for a list of answers that share one metric. Only the answer is scored:
    thought blocks, markdown emphasis and a trailing period are removed first (`clean_answer`)."""
    predictions = [clean_answer(p) for p in predictions]
    if metric in PER_ANSWER:
        return [PER_ANSWER[metric](p, r) for p, r in zip(predictions, references, strict=True)]
    if metric == "cider":
        return [min(1.0, s / 10.0) for s in cider_d(predictions, references)]
    raise KeyError(metric)
