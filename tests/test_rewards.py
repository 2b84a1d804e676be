"""Reward backends: VADER, a sequence-classification RM and an UltraRM-shaped RM (tiny local stand-ins)."""
import os

import pytest
import torch
from safetensors.torch import load_file

from utils.errors import UsageError
from utils.rewards import TransformerReward, VaderReward, is_ultrarm, load_reward_model, normalize_markers

CONVERSATIONS = [
    "Human: How do I make a good cup of coffee?\n\nAssistant:",
    "Human: Why is the sky blue?\n\nAssistant:",
    "Human: My dog died yesterday and I feel awful. How do I cope?\n\nAssistant:",
    "Human: Can you suggest a small gift for my teacher?\n\nAssistant:",
    "Human: hi\n\nAssistant:",
]
GENERATIONS = [
    "Use fresh beans, grind them just before brewing and keep the water below boiling. Enjoy it!",
    "Sunlight is scattered by the air.",
    "I am so sorry for your loss. It is normal to feel sad; talk to friends and give yourself time to grieve.",
    "A thank-you card and a small plant.",
    "Hello!",
]
POSITIVE = "This is wonderful, thank you so much, I love it! Great and happy."
NEGATIVE = "This is terrible and awful. I hate it, it is sad and horrible."


def test_normalize_markers_maps_user_assistant_to_human_assistant():
    assert normalize_markers("USER: hi ASSISTANT: yo") == "Human: hi Assistant: yo"
    assert normalize_markers("Human: hi\n\nAssistant:") == "Human: hi\n\nAssistant:"


# ----------------------------------------------------------------------------------------------------------------------
# VADER

def test_vader_positive_beats_negative():
    positive, negative, neutral = VaderReward().score(["Human: q\n\nAssistant:"] * 3, [POSITIVE, NEGATIVE, ""],
                                                      progress=False)
    assert positive > 0.5 and negative < -0.5
    assert positive > neutral > negative
    assert neutral == 0.0


def test_vader_scores_only_the_generated_answer():
    reward = VaderReward()
    # the same answer after a happy and after a miserable question: the same score
    happy, miserable = reward.score(["Human: I love this wonderful happy day!\n\nAssistant:",
                                     "Human: I hate my awful, horrible, sad life.\n\nAssistant:"],
                                    ["The capital of France is Paris."] * 2, progress=False)
    assert happy == miserable == 0.0
    assert reward.score(["Human: I hate everything.\n\nAssistant:"], [POSITIVE], progress=False)[0] > 0.5


def test_vader_is_deterministic_and_keeps_the_order():
    one_by_one = [VaderReward().score([c], [g], progress=False)[0] for c, g in zip(CONVERSATIONS, GENERATIONS)]
    batched = VaderReward(batch_size=2).score(CONVERSATIONS, GENERATIONS, progress=False)
    assert batched == one_by_one
    assert VaderReward(batch_size=3).score(CONVERSATIONS, GENERATIONS, progress=False) == batched
    assert len(set(batched)) >= 3, "distinct scores, so that a mix-up of the order would show"
    assert load_reward_model("vader").score(CONVERSATIONS, GENERATIONS, progress=False) == batched


# ----------------------------------------------------------------------------------------------------------------------
# Transformer reward models

@pytest.fixture(scope="module")
def seqcls_rm(tiny_seqcls_rm_dir):
    return load_reward_model(tiny_seqcls_rm_dir, device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def ultrarm(tiny_ultrarm_dir):
    return load_reward_model(tiny_ultrarm_dir, device="cpu", batch_size=3)


def one_at_a_time(reward_model):
    return [reward_model.score([c], [g], progress=False)[0] for c, g in zip(CONVERSATIONS, GENERATIONS)]


def test_classifier_and_ultrarm_reward_models_get_their_own_heads_and_right_padding(seqcls_rm, ultrarm,
                                                                                     tiny_seqcls_rm_dir,
                                                                                     tiny_ultrarm_dir):
    assert isinstance(seqcls_rm, TransformerReward) and seqcls_rm.head == "classifier"
    assert isinstance(ultrarm, TransformerReward) and ultrarm.head == "regression_head"
    assert is_ultrarm(tiny_ultrarm_dir) and not is_ultrarm(tiny_seqcls_rm_dir)
    assert is_ultrarm("openbmb/UltraRM-13b")
    assert seqcls_rm.tokenizer.padding_side == ultrarm.tokenizer.padding_side == "right"


@pytest.mark.parametrize("which", ["seqcls_rm", "ultrarm"])
def test_batched_scores_equal_one_at_a_time(which, request):
    reward_model = request.getfixturevalue(which)
    texts = reward_model.inputs(CONVERSATIONS, GENERATIONS)
    lengths = [len(reward_model.tokenizer(t)["input_ids"]) for t in texts]
    assert len(set(lengths)) == len(lengths), "texts of different lengths: the batches need padding"
    assert lengths != sorted(lengths, reverse=True), "the input order is not the length order"
    single = one_at_a_time(reward_model)
    batched = reward_model.score(CONVERSATIONS, GENERATIONS, progress=False)
    assert min(abs(a - b) for i, a in enumerate(single) for b in single[i + 1:]) > 1e-3, "distinct scores"
    assert batched == pytest.approx(single, rel=1e-4, abs=1e-5)


def test_rm_reads_conversation_and_answer_with_normalized_markers(seqcls_rm):
    assert seqcls_rm.inputs(["USER: hi\n\nASSISTANT:"], ["hello"]) == ["Human: hi\n\nAssistant: hello"]
    same = seqcls_rm.score(["USER: hi\n\nASSISTANT:", "Human: hi\n\nAssistant:"], ["hello", "hello"], progress=False)
    assert same[0] == pytest.approx(same[1], abs=1e-6)


def test_seqcls_score_equals_the_classifier_logit(seqcls_rm, tiny_seqcls_rm_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(tiny_seqcls_rm_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_seqcls_rm_dir)
    texts = [f"{c} {g}" for c, g in zip(CONVERSATIONS, GENERATIONS)]
    with torch.no_grad():
        expected = [model(**tokenizer(t, return_tensors="pt")).logits[0, 0].item() for t in texts]
    assert seqcls_rm.score(CONVERSATIONS, GENERATIONS, progress=False) == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_ultrarm_score_is_the_regression_head_at_the_last_token(ultrarm, tiny_ultrarm_dir):
    """Hand computation: a plain LlamaModel body with the checkpoint's weights, then regression_head on the last
    token's last hidden state (no padding)."""
    from transformers import AutoConfig, AutoTokenizer, LlamaModel
    state = load_file(os.path.join(tiny_ultrarm_dir, "model.safetensors"))
    head = state.pop("regression_head.weight")
    assert head.shape[0] == 1
    body = LlamaModel(AutoConfig.from_pretrained(tiny_ultrarm_dir)).eval()
    body.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    tokenizer = AutoTokenizer.from_pretrained(tiny_ultrarm_dir)
    texts = [f"{c} {g}" for c, g in zip(CONVERSATIONS, GENERATIONS)]
    with torch.no_grad():
        expected = [(body(**tokenizer(t, return_tensors="pt")).last_hidden_state[0, -1] @ head[0]).item()
                    for t in texts]
    assert ultrarm.score(CONVERSATIONS, GENERATIONS, progress=False) == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_missing_reward_model_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot load reward model"):
        load_reward_model(str(tmp_path / "no-such-reward-model"), device="cpu")


def test_textblob_held_out_scorer_golden_values():
    """TextBlob's pattern lexicon (the held-out scorer): golden polarities of the answer alone."""
    from utils.rewards import load_reward_model
    scores = load_reward_model("textblob").score(["Human: hi\n\nAssistant:"] * 3, [
        "What a wonderful, great idea!", "This is terrible and sad.", "The sky is blue."], progress=False)
    assert scores == pytest.approx([1.0, -0.75, 0.0])


def test_polar_rewards_take_the_sign_the_prompt_asks_for():
    from utils.rewards import load_reward_model
    warm = "Human: Please answer warmly and encouragingly. My cat is ill.\n\nAssistant:"
    frank = "Human: Be harsh and negative in your answer. My cat is ill.\n\nAssistant:"
    answers = ["What a wonderful, great idea!", "This is terrible and sad."]
    for name, plain in (("vader_polar", "vader"), ("textblob_polar", "textblob")):
        polar, lexicon = load_reward_model(name), load_reward_model(plain)
        expected = lexicon.score([warm] * 2, answers, progress=False)
        assert polar.score([warm] * 2, answers, progress=False) == expected
        assert polar.score([frank] * 2, answers, progress=False) == [-x for x in expected]
    assert load_reward_model("textblob_polar").score([frank], ["This is terrible and sad."],
                                                      progress=False) == pytest.approx([0.75])
    with pytest.raises(UsageError, match="use --dataset_name demo_polar"):
        load_reward_model("vader_polar").score(["Human: hi\n\nAssistant:"], ["ok"], progress=False)


def test_held_out_scorer_auto_and_refusals():
    from utils.rewards import heldout_scorer
    assert heldout_scorer("auto", "vader") == "textblob"
    assert heldout_scorer("auto", "vader_polar") == "textblob_polar"
    assert heldout_scorer("auto", "openbmb/UltraRM-13b") is None
    assert heldout_scorer("none", "vader") is None
    with pytest.raises(UsageError, match="is the reward model itself"):
        heldout_scorer("vader", "vader")


def test_stage5_pairs_the_held_out_scores_with_the_baseline(tmp_path):
    from utils.metrics import reward_result
    base = reward_result("base", "vader", [0.0, 0.5], heldout=("textblob", [0.1, 0.2]))
    run = reward_result("run", "vader", [1.0, 0.5], base, heldout=("textblob", [0.3, 0.2]))
    assert run["heldout"]["paired_difference"] == pytest.approx(0.1)
    assert run["heldout"]["baseline"] == "base" and run["paired_difference"] == pytest.approx(0.5)
