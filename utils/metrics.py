"""Evaluation arithmetic: turn-marker cutting, rep-n and diversity, means with standard errors."""
import math

TURN_MARKERS = ("Human:", "User:", "USER:", "###Human:", "###USER:")


def cut_at_next_turn(generation, markers=TURN_MARKERS):
    """The answer alone: everything before the model starts writing the user's next turn."""
    cut = min((i for i in (generation.find(m) for m in markers) if i >= 0), default=len(generation))
    return generation[:cut].strip()


def word_tokenize(text):
    """nltk's word tokenizer; without its punkt data (not downloadable offline), the line-preserving variant."""
    import nltk
    try:
        return nltk.word_tokenize(text), "punkt"
    except LookupError:
        return nltk.word_tokenize(text, preserve_line=True), "preserve_line"


def rep_n(tokens, n):
    """100 * (1 - unique n-grams / (n-grams + 1)), as in the paper's evaluation."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 100.0 * (1.0 - len(set(grams)) / (len(grams) + 1))


def diversity(tokens):
    """prod over n = 2, 3, 4 of (1 - rep-n / 100)."""
    return math.prod(1.0 - rep_n(tokens, n) / 100.0 for n in (2, 3, 4))


def mean_and_se(values):
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def paired_difference(values, baseline):
    """Mean of values - baseline over the same prompts, and its standard error."""
    if len(values) != len(baseline):
        raise ValueError(f"paired runs must answer the same prompts ({len(values)} vs {len(baseline)})")
    return mean_and_se([a - b for a, b in zip(values, baseline)])
