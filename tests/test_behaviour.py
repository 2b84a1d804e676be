"""What each method does, beyond its zero setting, on tiny random models. Every oracle is written here: a planted
reward, a planted value function, a greedy loop without cache, a teacher-forced forward, the original's edit."""
import os

import pytest
import torch
from torch import nn

from bench.original_edit import OriginalEdit
from conftest import QUESTIONS, build_model, write_jsonl
from utils.generation import generate_batch, generation_config
from utils.intervention import ValueIntervention
from utils.methods import args_decode, cd_prefix_decode
from utils.metrics import cut_at_next_turn
from utils.models import find_final_norm
from utils.rewards import RewardModel
from utils.value_model import ValueModel, save_value_model

ARCHS = ["llama", "mistral", "gemma", "gpt2"]
PROMPTS = [f"User: {q}\nAssistant:" for q in QUESTIONS[:3]]
CONVERSATIONS = [f"Human: {q}\n\nAssistant:" for q in QUESTIONS[:3]]


class LetterReward(RewardModel):
    """A planted reward: how often `letter` appears in the answer."""
    name = "letter"

    def __init__(self, letter="e"):
        super().__init__(batch_size=64)
        self.letter = letter

    def inputs(self, _conversations, generations):  # the answer alone
        return list(generations)

    def score_batch(self, texts):
        return [float(t.count(self.letter)) for t in texts]


class HashReward(LetterReward):
    """A planted reward that differs between almost any two texts: the sum of the character codes, modulo 13."""

    def score_batch(self, texts):
        return [float(sum(map(ord, t)) % 13) for t in texts]


def linear_value_model(direction):
    """A ValueModel computing exactly V(o) = direction . o: Linear(d, 2) - ReLU - Linear(2, 1) with W1 = [w; -w]."""
    model = ValueModel(direction.numel(), 2, 2)
    first, last = [m for m in model.net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        first.weight.copy_(torch.stack([direction, -direction]))
        first.bias.zero_()
        last.weight.copy_(torch.tensor([[1.0, -1.0]]))
        last.bias.zero_()
    return model


@pytest.fixture(scope="module")
def llama(tiny_tokenizer):
    return build_model("llama", tiny_tokenizer)


# ----------------------------------------------------------------------------------------------------------------------
# ARGS: argmax over the top-k of logit + w * reward(prefix + token)

@torch.no_grad()
def args_oracle(model, tok, prompt, reward, top_k, weight, steps):
    """One prompt, no cache, no padding: the full forward of prompt + prefix at every step."""
    ids, generated = tok(prompt)["input_ids"], []
    for _ in range(steps):
        logits = model(torch.tensor([ids + generated])).logits[0, -1].float()
        top_logits, top_tokens = logits.topk(top_k)
        texts = [cut_at_next_turn(tok.decode(generated + [t], skip_special_tokens=True)) for t in top_tokens.tolist()]
        scores = torch.tensor(reward.score_batch(texts))
        generated.append(int(top_tokens[(top_logits + weight * scores).argmax()]))
        if generated[-1] == tok.eos_token_id:
            break
    return tok.decode(generated, skip_special_tokens=True).strip()


def test_args_with_a_positive_weight_picks_argmax_of_logit_plus_weighted_reward(llama, tiny_tokenizer):
    reward = HashReward()
    _, steered = args_decode(llama, tiny_tokenizer, PROMPTS, CONVERSATIONS, reward, top_k=5, weight=1.0,
                             max_new_tokens=6)
    _, greedy = args_decode(llama, tiny_tokenizer, PROMPTS, CONVERSATIONS, reward, top_k=5, weight=0.0,
                            max_new_tokens=6)
    for prompt, answer in zip(PROMPTS, steered):
        assert answer == args_oracle(llama, tiny_tokenizer, prompt, reward, 5, 1.0, 6)
    assert steered != greedy, "the planted reward changes some choice (the test can fail)"


# ----------------------------------------------------------------------------------------------------------------------
# CD prefix: of K sampled blocks, the one whose last state the value model rates highest

@torch.no_grad()
def state_before_last_token(model, input_ids, attention_mask, last_index):
    """Final-norm output (transformers' last hidden state) at the position that chose the token at `last_index`
    (teacher-forced, full forward)."""
    out = model(input_ids=input_ids[None], attention_mask=attention_mask[None],
                position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0)[None], output_hidden_states=True)
    return out.hidden_states[-1][0, last_index - 1].float()


def test_cd_prefix_keeps_the_block_with_the_highest_value(llama, tiny_tokenizer, monkeypatch):
    torch.manual_seed(0)
    value_model = ValueModel(32, 16, 2)
    k, block = 4, 3
    calls, original = [], llama.generate

    def recording_generate(**kwargs):
        out = original(**kwargs)
        calls.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone(), out.clone()))
        return out
    monkeypatch.setattr(llama, "generate", recording_generate)
    torch.manual_seed(1)
    _, results = cd_prefix_decode(llama, tiny_tokenizer, PROMPTS, value_model, num_candidates=k, block_size=block,
                                  max_new_tokens=2 * block)
    eos = tiny_tokenizer.eos_token_id
    expected, chose_other_than_first = [[] for _ in PROMPTS], False
    for input_ids, attention, out in calls:
        prompt_len = input_ids.shape[1]
        for i in range(len(PROMPTS)):
            if eos in expected[i]:
                continue
            values = []
            for c in range(k):
                row = out[i * k + c]
                new = row[prompt_len:].tolist()
                last = prompt_len + (new.index(eos) if eos in new else len(new) - 1)
                mask = torch.cat([attention[i], torch.ones(len(new), dtype=attention.dtype)])
                values.append(value_model(state_before_last_token(llama, row, mask, last)[None]).item())
            best = max(range(k), key=values.__getitem__)
            chose_other_than_first |= best != 0
            expected[i] += out[i * k + best][prompt_len:].tolist()
    for tokens, answer in zip(expected, results):
        kept = tokens[:tokens.index(eos) + 1] if eos in tokens else tokens
        assert answer == tiny_tokenizer.decode(kept, skip_special_tokens=True).strip()
    assert chose_other_than_first, "the value model's choice matters somewhere (the test can fail)"


# ----------------------------------------------------------------------------------------------------------------------
# Value training recovers a planted value function

def test_value_training_recovers_a_planted_value_function(tmp_path):
    """States walk at random, o_{t+1} = o_t + noise, and r = w . o_T: then E[r | o_t] = w . o_t at every step, the
    value function TD(0) should find. The paper's training brings the test terminal loss far below the mean
    predictor's."""
    import train_value_model
    from utils.features import write_rows
    from utils.io import features_path, save_tensors
    from utils.value_model import load_value_model
    root, gen = str(tmp_path), torch.Generator().manual_seed(0)
    truth = torch.randn(8, generator=gen)
    data = {}
    for split, n in (("train", 400), ("test", 100)):
        lengths = torch.randint(1, 5, (n,), generator=gen)
        walks = torch.randn(n, 1, 8, generator=gen) + 0.3 * torch.randn(n, 4, 8, generator=gen).cumsum(1)
        valid = torch.arange(4).expand(n, -1) < lengths[:, None]
        rows = walks[valid]
        labels = rows[torch.cumsum(lengths, 0) - 1] @ truth
        data[split] = rows, lengths, labels
        write_rows(features_path(root, "toy-llm", "toy", "token_wise_activations", split), rows.shape[0], 8,
                   torch.float32, [(0, rows)])
        save_tensors(torch.arange(4).expand(n, -1) < lengths[:, None], features_path(root, "toy-llm", "toy", "mask",
                                                                                    split))
        save_tensors(labels, features_path(root, "toy-llm", "toy", "labels", split))
    train_value_model.main(["--model_name", "toy-llm", "--dataset_name", "toy", "--lr", "0.003", "--epochs", "150",
                            "--batch_size", "50", "--hidden_dim", "64", "--device", "cpu", "--output_dir", root])
    # the losses worked out here from the saved file and the planted data, not the ones training reports
    value_model = load_value_model(os.path.join(root, "trained_model", "value_model_toy-llm_toy_0.003_ep150_bs50_h64"))
    rows, lengths, labels = data["test"]
    with torch.no_grad():
        values = value_model(rows)
    last = torch.cumsum(lengths, 0) - 1
    terminal = ((values[last] - labels) ** 2).mean()
    mean_predictor = ((data["train"][2].mean() - labels) ** 2).mean()
    assert terminal < 0.1 * mean_predictor  # about 0.36 against 15.6 on this draw
    # and at every step, not only the last: V(o_t) is close to the planted w . o_t
    planted = rows @ truth
    assert ((values - planted) ** 2).mean() < 0.1 * ((planted - planted.mean()) ** 2).mean()  # about 0.27 vs 15


# ----------------------------------------------------------------------------------------------------------------------
# RE-Control end to end: a planted value function raises a planted reward through stage 4

def test_re_control_raises_a_planted_reward_end_to_end(tiny_llama_dir, tiny_tokenizer, tmp_path):
    """V(o) = the logit of one token: stage 4 with that value model writes the token more often than base does."""
    import json

    from transformers import AutoModelForCausalLM

    import inference_intervention
    head = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).get_output_embeddings().weight.detach()
    target = next(t for t in range(head.shape[0]) if tiny_tokenizer.decode([t]).strip().isalpha()
                  and len(tiny_tokenizer.decode([t]).strip()) >= 3)
    word = tiny_tokenizer.decode([target]).strip()
    stem = str(tmp_path / "planted_value_model")
    save_value_model(linear_value_model(head[target]), stem, llm=tiny_llama_dir)
    write_jsonl(tmp_path / "q_test.jsonl", [{"question": q} for q in QUESTIONS])
    common = ["--model_name", tiny_llama_dir, "--dataset_name", "toy", "--data_file", str(tmp_path / "q_{split}.jsonl"),
              "--device", "cpu", "--max_new_tokens", "8", "--batch_size", "3", "--output_dir", str(tmp_path)]
    inference_intervention.main(common + ["--use_intervention", "False"])
    inference_intervention.main(common + ["--use_intervention", "True", "--value_model", stem, "--lr", "0.5",
                                          "--epochs", "10"])
    reward = LetterReward(word)
    counts = {}
    for run in ("tiny-llama0_toy_base", "tiny-llama0_toy_planted_value_model_10_0.5"):
        records = json.load(open(tmp_path / "response" / f"{run}.json"))
        counts[run] = sum(reward.score([r["conversation"] for r in records], [r["results"] for r in records],
                                       progress=False))
    assert counts["tiny-llama0_toy_planted_value_model_10_0.5"] >= counts["tiny-llama0_toy_base"] + len(QUESTIONS)


# ----------------------------------------------------------------------------------------------------------------------
# bf16 model: the edit runs in float32; tokens equal the original all-position SGD edit on four architectures

def test_a_bf16_model_goes_through_the_hook_with_a_float32_edit(tiny_tokenizer):
    model = build_model("llama", tiny_tokenizer).to(torch.bfloat16)
    torch.manual_seed(0)
    value_model = ValueModel(32, 16, 2)
    seen = {}
    norm = find_final_norm(model)

    def keep(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output[:, -1].clone())  # returns None: the output is left as it is
        return hook
    first = norm.register_forward_hook(keep("before"))
    with ValueIntervention(model, value_model, 1e-3, 50):
        after = norm.register_forward_hook(keep("after"))
        generate_batch(model, tiny_tokenizer, PROMPTS[:1], generation_config(model, tiny_tokenizer, 1))
        after.remove()
    first.remove()
    assert seen["after"].dtype == torch.bfloat16
    sgd = seen["before"].float().clone().requires_grad_(True)  # torch.optim.SGD in float32, by hand
    optimizer = torch.optim.SGD([sgd], lr=1e-3)
    for _ in range(50):
        optimizer.zero_grad()
        (-value_model(sgd).sum()).backward()
        optimizer.step()
    torch.testing.assert_close(seen["after"].float(), sgd.detach().to(torch.bfloat16).float(), atol=1e-2, rtol=0)
    in_bf16 = seen["before"]
    bf16_model = ValueModel(32, 16, 2).to(torch.bfloat16)
    bf16_model.load_state_dict(value_model.state_dict())
    for _ in range(50):  # the same steps in bf16: 1e-3 x a gradient of about 1 rounds away against coordinates ~1
        x = in_bf16.clone().requires_grad_(True)
        (-bf16_model(x).sum()).backward()
        in_bf16 = (x + 1e-3 * x.grad).detach()
    assert not torch.equal(seen["after"], in_bf16), "a bf16 edit would differ: the float32 one is what ran"


@pytest.mark.parametrize("arch", ARCHS)
def test_tokens_equal_the_original_all_position_sgd_edit(tiny_tokenizer, arch):
    model = build_model(arch, tiny_tokenizer)
    torch.manual_seed(1)
    value_model = ValueModel(32, 16, 2)
    config = generation_config(model, tiny_tokenizer, 8)
    config.eos_token_id = []
    prompts = [f"User: {q}\nAssistant:" for q in QUESTIONS[:4]]
    base = generate_batch(model, tiny_tokenizer, prompts, config)[1]
    with ValueIntervention(model, value_model, 0.5, 10):
        ours = generate_batch(model, tiny_tokenizer, prompts, config)[1]
    with OriginalEdit(model, value_model, 0.5, 10):
        original = generate_batch(model, tiny_tokenizer, prompts, config)[1]
    assert torch.equal(ours, original)
    assert not torch.equal(ours, base), "the edit changes tokens (the test can fail)"
