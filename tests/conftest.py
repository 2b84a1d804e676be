"""Tiny random-config models, a tiny tokenizer and small data files, all built here: nothing from a hub."""
import json
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)  # tiny models: threads only add contention (2 threads ran 100x slower here)

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

QUESTIONS = [
    "How do I make a good cup of coffee?",
    "My dog died yesterday and I feel awful. How do I cope?",
    "Why is the sky blue?",
    "I am so angry that my laptop broke again, what should I do?",
    "Can you suggest a small gift for my teacher?",
    "What is a good way to learn Spanish at home?",
]
TEST_QUESTIONS = QUESTIONS[:4]

# scripts/test.sh runs two workers (pytest -n 2 --dist loadfile): each file on one worker, files in collection order.
# The slowest files (subprocesses, vLLM's start) go first, so that both workers end at about the same time.
SLOW_FILES_FIRST = ("test_resume.py", "test_serve.py", "test_vllm.py", "test_recipes.py", "test_errors.py")


def pytest_collection_modifyitems(items):
    first = {name: rank for rank, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: the rest keep their order


def build_tokenizer(folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = QUESTIONS * 20 + ["Human: Assistant: User: hello world, thank you, great, sad, happy."] * 20
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    return fast


def tiny_config(arch, tokenizer):
    import transformers
    common = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id, initializer_range=0.2)
    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=256, **common)
    cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
           "gemma": transformers.GemmaConfig}[arch]
    extra = {"head_dim": 8} if arch == "gemma" else {}
    return cls(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, **extra, **common)


def build_model(arch, tokenizer, folder=None, seed=0):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer)).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return model


def build_vllm_llama(folder, hidden=128):
    """(model, tokenizer) of a tiny random float32 Llama saved in `folder`, shaped for vLLM's CPU attention (heads of
    64); its eos logit is doubled, so that responses end at different steps."""
    from transformers import LlamaConfig, LlamaForCausalLM
    tokenizer = build_tokenizer(folder)
    tokenizer.padding_side = "left"
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=hidden // 64, num_key_value_heads=1,
                         max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         initializer_range=0.2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] *= 2.2
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    tok = build_tokenizer(str(tmp_path_factory.mktemp("tokenizer")))
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer):
    folder = str(tmp_path_factory.mktemp("tiny-llama"))
    build_model("llama", tiny_tokenizer, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tiny_tokenizer):
    folder = str(tmp_path_factory.mktemp("tiny-gpt2"))
    build_model("gpt2", tiny_tokenizer, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_seqcls_rm_dir(tmp_path_factory, tiny_tokenizer):
    """A sequence-classification reward model with one label (the shape of argsearch/llama-7b-rm-float32)."""
    from transformers import LlamaForSequenceClassification
    folder = str(tmp_path_factory.mktemp("tiny-rm"))
    config = tiny_config("llama", tiny_tokenizer)
    config.num_labels = 1
    torch.manual_seed(1)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_ultrarm_dir(tmp_path_factory, tiny_tokenizer):
    """A Llama body with a bias-free regression_head (the shape of openbmb/UltraRM-13b)."""
    from utils.rewards import llama_reward_model_class
    folder = str(tmp_path_factory.mktemp("tiny-ultrarm"))
    torch.manual_seed(2)
    llama_reward_model_class()(tiny_config("llama", tiny_tokenizer)).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def write_jsonl(path, records):
    with open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return str(path)


@pytest.fixture
def question_file(tmp_path):
    """Prompts in the {split} file layout that --data_file accepts."""
    for split, qs in (("train", QUESTIONS), ("test", QUESTIONS[:4])):
        write_jsonl(tmp_path / f"q_{split}.jsonl", [{"question": q} for q in qs])
    return str(tmp_path / "q_{split}.jsonl")


@pytest.fixture(scope="module")
def qfile(tmp_path_factory):
    """Prompts in the {split} layout (train: QUESTIONS, test: TEST_QUESTIONS), once per test module."""
    folder = tmp_path_factory.mktemp("questions")
    for split, qs in (("train", QUESTIONS), ("test", TEST_QUESTIONS)):
        write_jsonl(folder / f"q_{split}.jsonl", [{"question": q} for q in qs])
    return str(folder / "q_{split}.jsonl")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_llama_dir, qfile):
    """Stages 1-3 once per test module on the tiny Llama folder: stage 1, stage 2 with VADER (both splits), stage 3
    for 3 epochs. Shared by the module's tests: a test that writes into it works on a copy."""
    import get_activations_only
    import reward_label
    import train_value_model
    from helpers import D, llm_args
    out = str(tmp_path_factory.mktemp("run-llama"))
    get_activations_only.main(llm_args(tiny_llama_dir, out, qfile))
    for mode in ("train", "test"):
        reward_label.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--reward_model", "vader",
                           "--mode", mode, "--device", "cpu", "--batch_size", "2", "--output_dir", out])
    train_value_model.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--lr", "0.001", "--epochs", "3",
                            "--batch_size", "2", "--device", "cpu", "--output_dir", out])
    return out
