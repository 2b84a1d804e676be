"""The Python API on the tiny Llama folder: record, train, steer in one process; the same numbers as the scripts."""
import os

import pytest
import torch

from conftest import QUESTIONS, ROOT
from utils import (
    ValueTrainingConfig,
    generate,
    load_policy,
    load_reward_model,
    record_states,
    train_value_model,
)
from utils.errors import UsageError


@pytest.fixture(scope="module")
def policy(tiny_llama_dir):
    return load_policy(tiny_llama_dir, device="cpu")


def test_record_states_equals_a_forward_of_each_prompt_plus_answer(policy):
    prompts = policy.format(QUESTIONS[:3])
    states = record_states(policy, prompts, max_new_tokens=4, batch_size=2)
    assert states.rows.shape == (int(states.lengths.sum()), 32) and len(states.responses) == 3
    assert states.prompts == prompts
    # step 0 of response 0 is o at the last prompt position of a plain forward (transformers' last hidden state)
    with torch.no_grad():
        out = policy.model(**policy.tokenizer(prompts[:1], return_tensors="pt"), output_hidden_states=True)
    torch.testing.assert_close(states.rows[0], out.hidden_states[-1][0, -1].float(), atol=1e-5, rtol=1e-5)


def test_train_then_steer_in_one_process(policy, tmp_path):
    prompts = policy.format(QUESTIONS)
    states = record_states(policy, prompts, max_new_tokens=5, num_samples=2, batch_size=3, seed=1)
    rewards = torch.linspace(-1, 1, len(states.responses))
    value_model = train_value_model(states.rows, states.lengths, rewards,
                                    ValueTrainingConfig(lr=0.01, epochs=3, batch_size=4, td_lambda=1.0,
                                                        val_fraction=0.34, early_stopping=True),
                                    groups=states.prompts)
    assert value_model.config["input_dim"] == 32
    _, base = generate(policy, prompts[:2], method="base", max_new_tokens=5)
    _, zero = generate(policy, prompts[:2], method="re_control", value_model=value_model, step_size=0.0,
                       num_updates=5, max_new_tokens=5)
    _, steered = generate(policy, prompts[:2], method="re_control", value_model=value_model, step_size=50.0,
                          num_updates=5, max_new_tokens=5)
    assert zero == base, "alpha = 0 equals base"
    assert steered != base
    # the hook is gone afterwards: base again
    assert generate(policy, prompts[:2], method="base", max_new_tokens=5)[1] == base
    _, args_answers = generate(policy, prompts[:2], method="args", reward_model=load_reward_model("vader"),
                               weight=0.0, top_k=3, max_new_tokens=5)
    assert args_answers == base, "ARGS with weight 0 is greedy"
    with pytest.raises(UsageError, match="needs a value_model"):
        generate(policy, prompts[:1], method="re_control")


def test_readme_example_runs(tiny_llama_dir, tmp_path, capsys):
    """The README's "Use from Python" example, with the demo's model and value model swapped for the tiny ones."""
    import re

    from utils.value_model import ValueModel, save_value_model
    torch.manual_seed(0)
    save_value_model(ValueModel(32, 32, 2), str(tmp_path / "vm"), llm=tiny_llama_dir)
    readme = open(os.path.join(ROOT, "README.md")).read()
    code = re.search(r"## Use from Python.*?```python\n(.*?)```", readme, re.S).group(1)
    value_model_path = '"runs/demo/trained_model/value_model_smollm2_135M_demo_0.001_td1_vf0.1_es"'
    code = (code.replace('"smollm2_135M"', repr(tiny_llama_dir))
            .replace(value_model_path, repr(str(tmp_path / "vm")))
            .replace('"results/', '"' + os.path.join(ROOT, "results") + "/")
            .replace("max_new_tokens=40", "max_new_tokens=4").replace("epochs=20", "epochs=2"))
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "base:" in out and "RE-Control:" in out and "trained on 8 responses" in out
