"""Reward models behind one interface (stages 2 and 5): VADER, TextBlob, sequence-classification RMs, UltraRM."""
import json
import os

import torch
from torch import nn
from tqdm.auto import tqdm

from utils.data import RM_MARKERS
from utils.errors import UsageError, first_line
from utils.models import resolve_device, resolve_dtype

MAX_REWARD_TOKENS = 2048


def normalize_markers(text):
    """The paper's RMs read 'Human:'/'Assistant:' turns."""
    for marker, normal in RM_MARKERS.items():
        text = text.replace(marker, normal)
    return text


class RewardModel:
    """score(conversations, generations) -> one float per pair; batched, longest texts first."""
    name = "reward"

    def __init__(self, batch_size=32):
        self.batch_size = batch_size

    def texts(self, conversations, generations):
        return [normalize_markers(f"{c} {g}") for c, g in zip(conversations, generations)]

    def batches(self, inputs):
        """Indices of `inputs` in batches, longest first (less padding)."""
        order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def score(self, conversations, generations, progress=True):
        inputs = self.inputs(conversations, generations)
        scores = [0.0] * len(inputs)
        for batch in tqdm(self.batches(inputs), desc=f"scoring with {self.name}", disable=not progress):
            for i, value in zip(batch, self.score_batch([inputs[i] for i in batch])):
                scores[i] = float(value)
        return scores

    def score_run(self, conversations, generations, run_for):
        """score() batch by batch through a BatchRun (run_for(number of batches)): resumable and shardable.

        Returns (run, scores); scores is None in the processes that do not write the output.
        """
        inputs = self.inputs(conversations, generations)
        batches = self.batches(inputs)
        run = run_for(len(batches))
        for i in run.progress(f"scoring with {self.name}"):
            run.save(i, [float(v) for v in self.score_batch([inputs[j] for j in batches[i]])])
        if not run.merging():
            return run, None
        scores = [0.0] * len(inputs)
        for batch, part in zip(batches, run.results()):
            for j, value in zip(batch, part):
                scores[j] = value
        return run, scores

    def inputs(self, conversations, generations):
        return self.texts(conversations, generations)

    def score_batch(self, texts):
        raise NotImplementedError


class AnswerLexicon(RewardModel):
    """A sentiment lexicon that reads the generated answer alone (not the conversation)."""

    def inputs(self, _conversations, generations):
        return list(generations)


class VaderReward(AnswerLexicon):
    """The embedded demo reward: VADER compound sentiment (-1..1) of the generated answer alone."""
    name = "vader"

    def __init__(self, batch_size=32):
        super().__init__(batch_size)
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        self.analyzer = SentimentIntensityAnalyzer()

    def score_batch(self, texts):
        return [self.analyzer.polarity_scores(t)["compound"] for t in texts]


class TextBlobReward(AnswerLexicon):
    """The demo's held-out scorer: TextBlob's polarity (-1..1, the pattern library's hand-rated adjective lexicon) of
    the answer alone. No stage trains on it and no choice is made by it, so it checks VADER's gains for reward
    hacking (text that pleases one lexicon only)."""
    name = "textblob"

    def __init__(self, batch_size=32):
        super().__init__(batch_size)
        from textblob import TextBlob
        self.blob = TextBlob

    def score_batch(self, texts):
        return [self.blob(t).sentiment.polarity for t in texts]


# The prompt-dependent task (demo_polar): each prompt starts with one of these instructions; +1 asks for a warm
# answer, -1 for a frank, critical one (scripts/make_demo_polar.py writes the data).
POLAR_INSTRUCTIONS = {
    "Please answer warmly and encouragingly.": 1,
    "Be kind and upbeat in your answer.": 1,
    "Please answer bluntly and critically, and say what is wrong.": -1,
    "Be harsh and negative in your answer.": -1,
}


def requested_polarity(conversation):
    """+1 or -1: the polarity the prompt's instruction asks for (POLAR_INSTRUCTIONS)."""
    found = {sign for instruction, sign in POLAR_INSTRUCTIONS.items() if instruction in conversation}
    if len(found) != 1:
        raise UsageError("a polar reward (vader_polar, textblob_polar) reads prompts that ask for one polarity: use "
                         "--dataset_name demo_polar")
    return found.pop()


class PolarLexicon(RewardModel):
    """The prompt-dependent task's reward: a lexicon's sentiment of the answer, times the polarity the prompt asks
    for (+1 warm, -1 frank). The sign comes from the prompt's instruction; the score from the answer alone."""
    lexicon = None

    def __init__(self, batch_size=32):
        super().__init__(batch_size)
        self.answer_score = self.lexicon(batch_size)
        self.name = f"{self.answer_score.name}_polar"

    def inputs(self, conversations, generations):
        return [(requested_polarity(c), g) for c, g in zip(conversations, generations)]

    def score_batch(self, pairs):
        scores = self.answer_score.score_batch([g for _, g in pairs])
        return [sign * score for (sign, _), score in zip(pairs, scores)]


class VaderPolarReward(PolarLexicon):
    lexicon = VaderReward


class TextBlobPolarReward(PolarLexicon):
    lexicon = TextBlobReward


LEXICON_REWARDS = {"vader": VaderReward, "textblob": TextBlobReward, "vader_polar": VaderPolarReward,
                   "textblob_polar": TextBlobPolarReward}
HELDOUT = {"vader": "textblob", "vader_polar": "textblob_polar"}  # what 'auto' reports beside a reward


def llama_reward_model_class():
    """UltraRM-13b's head: a Llama body and a bias-free regression_head read at the last non-padding token."""
    from transformers import LlamaModel, LlamaPreTrainedModel

    class LlamaRewardModel(LlamaPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.model = LlamaModel(config)
            self.regression_head = nn.Linear(config.hidden_size, 1, bias=False)
            self.post_init()

        def forward(self, input_ids, attention_mask):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            rewards = self.regression_head(hidden).squeeze(-1)
            last = attention_mask.sum(dim=1) - 1  # right padding
            return rewards[torch.arange(rewards.shape[0], device=rewards.device), last]

    return LlamaRewardModel


class TransformerReward(RewardModel):
    """A reward model read from the hub or a folder: UltraRM's class, or any sequence classifier with one label."""

    def __init__(self, path, device="auto", dtype="auto", batch_size=32, trust_remote_code=False):
        super().__init__(batch_size)
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        self.name = path
        if path.startswith(("/", "./", "../", "~")) and not os.path.isdir(os.path.expanduser(path)):
            raise UsageError(f"cannot load reward model {path!r}: no such folder; pass 'vader', a hub id or the "
                             f"folder of a sequence-classification or UltraRM model")
        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            if is_ultrarm(path):
                self.model = llama_reward_model_class().from_pretrained(path, dtype=torch_dtype)
                self.head = "regression_head"
            else:
                self.model = AutoModelForSequenceClassification.from_pretrained(
                    path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
                self.head = "classifier"
        except (OSError, ValueError) as err:
            first = first_line(err)
            raise UsageError(f"cannot load reward model {path!r} ({first}); pass 'vader', a reachable hub id or a "
                             f"folder of a sequence-classification or UltraRM model")
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.unk_token or self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval()

    @torch.no_grad()
    def score_batch(self, texts):
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=MAX_REWARD_TOKENS)
        enc = {k: v.to(self.model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        out = self.model(**enc)
        scores = out if self.head == "regression_head" else out.logits[:, 0]
        return scores.float().cpu().tolist()


def is_ultrarm(path):
    if "ultrarm" in path.lower():
        return True
    config = os.path.join(path, "config.json")
    if os.path.isfile(config):
        with open(config) as f:
            return "LlamaRewardModel" in (json.load(f).get("architectures") or [])
    return False


def load_reward_model(name, device="auto", dtype="auto", batch_size=32, trust_remote_code=False):
    if name in LEXICON_REWARDS:
        return LEXICON_REWARDS[name](batch_size)
    return TransformerReward(name, device, dtype, batch_size, trust_remote_code)


def heldout_scorer(name, reward_model):
    """The held-out scorer stage 5 reports beside `reward_model` ('auto': textblob beside vader, textblob_polar beside
    vader_polar), or None."""
    if name == "auto":
        name = HELDOUT.get(reward_model, "none")
    if name == reward_model:
        raise UsageError(f"--heldout_reward_model {name} is the reward model itself; pass another scorer or 'none'")
    return None if name == "none" else name
