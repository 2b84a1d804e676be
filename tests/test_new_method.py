"""A decoding method added from outside the project's files: a GenARM-style logit mix with a planted per-token reward
(logits + weight x r(token)), registered here and run through decode_methods.py, sweep.py, compare_methods.py and
make_table.py without editing any of them (docs/extending.md)."""
import contextlib
import os
from dataclasses import dataclass

import pytest
import torch

from conftest import QUESTIONS, TEST_QUESTIONS, write_jsonl
from helpers import NEW_TOKENS, D, llm_args, read_json, tag
from utils.config import nonnegative_float, option
from utils.decoding import DecodingMethod, methods, register
from utils.models import load_tokenizer

PLANTED_WORD = "happy"


@dataclass(frozen=True)
class MixOptions:
    mix_weight: float = option(0.0, "toy_mix: weight of the planted per-token reward added to the logits",
                               parse=nonnegative_float)


class ToyLogitMix(DecodingMethod):
    name, label, Options, engines, tuned = "toy_mix", "Toy logit mix", MixOptions, ("hf",), ("mix_weight",)
    planted_token = None  # set by the fixture: the token whose reward is 1 (every other token's is 0)

    def run_part(self, options, _value_tag):
        return f"toy_mix_{options.mix_weight}"

    @contextlib.contextmanager
    def session(self, resources, options):
        engine = resources.engine
        reward = torch.zeros(engine.model.get_output_embeddings().out_features)
        reward[self.planted_token] = 1.0

        def mix(_module, _inputs, logits):
            return logits + options.mix_weight * reward.to(logits.device, logits.dtype)
        handle = engine.model.get_output_embeddings().register_forward_hook(mix)
        try:
            yield lambda texts, _conversations: engine.decode(texts, resources.max_new_tokens)
        finally:
            handle.remove()


@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_llama_dir):
    """The toy method registered (removed again afterwards) and a question file with train, test and tune."""
    method = ToyLogitMix()
    method.planted_token = load_tokenizer(tiny_llama_dir)(PLANTED_WORD, add_special_tokens=False)["input_ids"][0]
    register(method)
    folder = tmp_path_factory.mktemp("toy-questions")
    for split, qs in (("train", QUESTIONS), ("test", TEST_QUESTIONS), ("tune", QUESTIONS[4:7])):
        write_jsonl(folder / f"q_{split}.jsonl", [{"question": q} for q in qs])
    yield method, str(folder / "q_{split}.jsonl")
    from utils import decoding
    decoding._REGISTRY.pop(method.name)


def planted_text(tokenizer_dir, method):
    tokenizer = load_tokenizer(tokenizer_dir)
    return tokenizer.decode([method.planted_token] * NEW_TOKENS, skip_special_tokens=True).strip()


def test_a_method_registered_in_a_test_runs_through_decode_methods(toy, tiny_llama_dir, tmp_path):
    import decode_methods
    import inference_intervention
    method, qfile = toy
    out = str(tmp_path)
    assert "--mix_weight" in decode_methods.build_parser().format_help()
    decode_methods.main(llm_args(tiny_llama_dir, out, qfile, "--method", "toy_mix", "--mix_weight", "1000"))
    name = f"{tag(tiny_llama_dir)}_{D}_toy_mix_1000.0"
    records = read_json(os.path.join(out, "response", f"{name}.json"))
    # a reward of 1000 on one token outweighs every logit of the random model: greedy picks it at every step
    assert [r["results"] for r in records] == [planted_text(tiny_llama_dir, method)] * len(TEST_QUESTIONS)
    meta = read_json(os.path.join(out, "response", f"{name}.meta.json"))
    assert meta["method"] == "toy_mix" and meta["label"] == "Toy logit mix" and meta["mix_weight"] == 1000.0
    # weight 0 adds nothing: token for token the base run
    decode_methods.main(llm_args(tiny_llama_dir, out, qfile, "--method", "toy_mix", "--mix_weight", "0"))
    inference_intervention.main(llm_args(tiny_llama_dir, out, qfile, "--use_intervention", "False"))
    zero = read_json(os.path.join(out, "response", f"{tag(tiny_llama_dir)}_{D}_toy_mix_0.0.json"))
    base = read_json(os.path.join(out, "response", f"{tag(tiny_llama_dir)}_{D}_base.json"))
    assert zero == base


def test_a_method_registered_in_a_test_is_swept_compared_and_tabled(toy, tiny_llama_dir, tmp_path):
    import compare_methods
    import make_table
    import sweep
    method, qfile = toy
    out = str(tmp_path)
    common = llm_args(tiny_llama_dir, out, qfile, "--embedding_model", "minilm")
    sweep.main(common + ["--split", "tune", "--method", "toy_mix", "--grid", "mix_weight=0,1000"])
    m = tag(tiny_llama_dir)
    result = read_json(os.path.join(out, "results", f"{m}_{D}_sweep_toy_mix.json"))
    assert result["method"] == "toy_mix" and result["tuned"] == ["mix_weight"] and result["split"] == "tune"
    assert [c["mix_weight"] for c in result["cells"]] == [0.0, 1000.0]
    assert [c["run"] for c in result["cells"]] == [f"{m}_{D}_tune_toy_mix_0.0", f"{m}_{D}_tune_toy_mix_1000.0"]
    tuned = read_json(os.path.join(out, "response", f"{m}_{D}_tune_toy_mix_1000.0.json"))
    assert {r["results"] for r in tuned} == {planted_text(tiny_llama_dir, method)}
    # the sweep's choice, read back by the comparison (the run is named after the chosen weight)
    chosen = result["chosen"]["mix_weight"]
    compare_methods.main(common + ["--methods", "base,toy_mix", "--settings_from",
                                   os.path.join(out, "results", f"{m}_{D}_sweep_toy_mix.json")])
    table = open(os.path.join(out, "results", f"{m}_{D}_comparison.md")).read()
    assert "| Toy logit mix |" in table and "| Base |" in table
    assert os.path.exists(os.path.join(out, "response", f"{m}_{D}_toy_mix_{chosen}.json"))
    make_table.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--output_dir", out])
    rows = open(os.path.join(out, "results", f"{m}_{D}_table.md")).read()
    assert "| Toy logit mix | test |" in rows


def test_unknown_method_names_fail_with_one_line_listing_the_known_ones(capsys):
    import decode_methods
    with pytest.raises(SystemExit) as err:
        decode_methods.parse_args(["--method", "no_such_method"])
    assert err.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and all(name in message for name in methods())


def test_every_script_resolves_the_same_value_model_from_the_same_flags(tmp_path):
    """--value_lr and the other shared defaults have one source: stage 3 writes the file that stage 4,
    decode_methods.py, sweep.py and compare_methods.py read with their default flags."""
    import compare_methods
    import decode_methods
    import inference_intervention
    import sweep
    import train_value_model
    from utils.configs import DecodeConfig
    from utils.stages.stage4_inference import find_policy_value_model
    stage3 = train_value_model.parse_args([])
    readers = {
        "inference_intervention.py": inference_intervention.parse_args(["--use_intervention", "True"]).config,
        "decode_methods.py": decode_methods.parse_args(["--method", "cd_prefix"]).config,
        "compare_methods.py": compare_methods.parse_args([])[0],
        "sweep.py": sweep.parse_args([]),
    }
    for script, config in readers.items():
        get = config.get if isinstance(config, dict) else lambda k, c=config: getattr(c, k)
        assert get("value_lr") == stage3.lr, script
        assert (get("model_name"), get("dataset_name")) == (stage3.model_name, stage3.dataset_name), script
        decode = DecodeConfig(**{k: get(k) for k in ("model_name", "dataset_name", "value_lr", "value_model")},
                              output_dir=str(tmp_path))
        stem, _ = find_policy_value_model(decode)
        assert os.path.basename(stem) == f"value_model_{stage3.model_name}_{stage3.dataset_name}_{stage3.lr}"
