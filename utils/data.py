"""Datasets and prompt formatting: HH-RLHF, SHP and HarmfulQA through datasets.load_dataset, local files, the shipped
demo sets."""
import json
import os
import re

from utils.errors import UsageError, first_line

# Turn markers. A generation ends where the model starts the user's next turn (these, in any of the formats the paper's
# data and models use); reward models read 'Human:'/'Assistant:' turns (the other spellings are rewritten to those).
USER_MARKERS = ("Human:", "User:", "USER:", "###Human:", "###USER:")
RM_MARKERS = {"USER:": "Human:", "ASSISTANT:": "Assistant:"}
TURN_WORDS = ("Human:", "Assistant:", "USER:", "ASSISTANT:", "User:")  # removed from a question before embedding

DATASET_HUB_IDS = {"hh_rlhf": "Anthropic/hh-rlhf", "shp": "stanfordnlp/SHP", "harmfulqa": "declare-lab/HarmfulQA"}
# Test-only data sets (the paper's out-of-distribution prompts): they have one split, and every split name a stage asks
# for (test, train, ood, ...) reads it. HarmfulQA's 1,960 questions are its one 'train' split on the hub.
SINGLE_SPLIT = {"harmfulqa": "train"}
DEMO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dataset")
# demo_ood: the demo's out-of-distribution prompts (instructions and tasks, some adversarial), dataset/demo_ood.jsonl,
# whatever the split name; `--dataset_name demo --split ood` reads the same file
DEMO_SINGLE_FILE = {"demo_ood": "demo_ood.jsonl"}
# shipped data sets with disjoint train, tune and test splits, dataset/{name}_{split}.jsonl; demo_polar is the
# prompt-dependent task (each demo prompt asks for a warm or a frank answer: scripts/make_demo_polar.py)
DEMO_SPLIT_SETS = ("demo", "demo_polar")
DATASET_NAMES = ("hh_rlhf", "shp", "harmfulqa", "demo", "demo_ood", "demo_polar")

# "RE-Control + Prompting" (paper, Table 1)
ALIGNMENT_PROMPT = ("A question from a curious user and an answer from an artificial intelligence assistant. "
                    "The assistant gives helpful, detailed, and polite answers to the user's questions.")

PROMPT_FIELDS = ("chosen", "history", "prompt", "question", "instruction")


# ----------------------------------------------------------------------------------------------------------------------
# Raw records -> dialogue turns

def parse_hh_dialogue(text):
    """'\\n\\nHuman: q\\n\\nAssistant: a\\n\\nHuman: q2\\n\\nAssistant: a2' -> the turns before the last answer."""
    cut = text.rfind("Assistant:")
    if cut < 0:
        raise UsageError("an HH-RLHF 'chosen' dialogue has no 'Assistant:' turn; check the data file")
    parts = re.split(r"(Human|Assistant):", text[:cut])
    turns = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        turns.append(("user" if speaker == "Human" else "assistant", content.strip()))
    if not turns or turns[-1][0] != "user":
        raise UsageError("an HH-RLHF dialogue does not end with a 'Human:' turn before its last answer")
    return turns


def record_turns(record):
    """The dialogue to answer, from whichever prompt field the record has."""
    if "chosen" in record:
        return parse_hh_dialogue(record["chosen"])
    for field in PROMPT_FIELDS[1:]:
        if isinstance(record.get(field), str) and record[field].strip():
            return [("user", record[field].strip())]
    raise UsageError(f"a record has none of the prompt fields {', '.join(PROMPT_FIELDS)} "
                     f"(it has: {', '.join(sorted(record)) or 'nothing'}); convert the file to one of these formats")


# ----------------------------------------------------------------------------------------------------------------------
# Turns -> text

def conversation_text(turns):
    """Model-independent 'Human: ...\\n\\nAssistant:' text: what reward models read."""
    lines = [f"{'Human' if role == 'user' else 'Assistant'}: {content}" for role, content in turns]
    return "\n\n".join(lines) + "\n\nAssistant:"


def format_prompt(turns, spec, tokenizer, system_prompt=None):
    """The policy's input: the paper's plain 'BEGIN text\\nAssistant:' format, or the tokenizer's chat template."""
    if spec.chat_template:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages += [{"role": role, "content": content} for role, content in turns]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if len(turns) == 1:
        text = spec.begin + turns[0][1] + "\nAssistant:"
    else:  # HH-RLHF: the dialogue as in the data set, "Human:" replaced by the model's user marker
        text = "".join(f"\n\n{spec.begin if role == 'user' else 'Assistant: '}{content}" for role, content in turns)
        text += "\n\nAssistant:"
    return f"{system_prompt}\n\n{text}" if system_prompt else text


# ----------------------------------------------------------------------------------------------------------------------
# Loading

def read_records_file(path):
    """JSON (a list, or an object holding one list) or JSON lines."""
    if not os.path.exists(path):
        raise UsageError(f"data file {path} not found")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise UsageError(f"data file {path} is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UsageError(f"data file {path} line {number} is neither JSON nor JSON lines ({err.msg})")
    if isinstance(data, dict):  # one record (it has a prompt field), or an object holding the list of records
        lists = [] if any(field in data for field in PROMPT_FIELDS) else [
            v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UsageError(f"data file {path} must hold JSON objects (one per record)")
    if not data:
        raise UsageError(f"data file {path} holds no records")
    return data


def has_tuning_split(dataset_name):
    """Whether a named data set ships a tuning split (the demo's three disjoint splits)."""
    return dataset_name in DEMO_SPLIT_SETS and os.path.exists(os.path.join(DEMO_DIR, f"{dataset_name}_tune.jsonl"))


def load_records(dataset_name, split, data_file=None, dataset_path=None):
    if data_file:
        return read_records_file(data_file.replace("{split}", split))
    if dataset_name in DEMO_SPLIT_SETS:
        return read_records_file(os.path.join(DEMO_DIR, f"{dataset_name}_{split}.jsonl"))
    if dataset_name in DEMO_SINGLE_FILE:
        return read_records_file(os.path.join(DEMO_DIR, DEMO_SINGLE_FILE[dataset_name]))
    if dataset_name not in DATASET_HUB_IDS:
        raise UsageError(f"unknown dataset {dataset_name!r}; use one of {', '.join(DATASET_NAMES)} "
                         f"or pass --data_file")
    import datasets
    source = dataset_path or DATASET_HUB_IDS[dataset_name]
    hub_split = SINGLE_SPLIT.get(dataset_name, split)
    try:
        rows = datasets.load_dataset(source, split=hub_split)
    except Exception as err:
        first = first_line(err)
        raise UsageError(f"cannot load {source!r} split {hub_split!r} with datasets.load_dataset ({first}); "
                         f"pass --dataset_path to a local copy or --data_file")
    records = [dict(row) for row in rows]
    if dataset_name == "shp":  # SHP has one row per pair of comments: keep each post once
        seen, unique = set(), []
        for record in records:
            if record.get("post_id") not in seen:
                seen.add(record.get("post_id"))
                unique.append(record)
        records = unique
    return records


def load_prompts(args, split, spec, tokenizer, system_prompt=None):
    """The split's prompts as records {prompt, conversation}, over-long ones dropped, the first --limit kept."""
    records = load_records(args.dataset_name, split, args.data_file, args.dataset_path)
    prompts, dropped = [], 0
    for record in records:
        turns = record_turns(record)
        prompt = format_prompt(turns, spec, tokenizer, system_prompt)
        if len(tokenizer(prompt, add_special_tokens=not spec.chat_template)["input_ids"]) > args.max_prompt_tokens:
            dropped += 1
            continue
        prompts.append({"prompt": prompt, "conversation": conversation_text(turns)})
        if args.limit and len(prompts) >= args.limit:
            break
    if not prompts:
        raise UsageError(f"every {split} prompt is longer than --max_prompt_tokens {args.max_prompt_tokens}; "
                         f"raise it or use shorter prompts")
    if dropped:
        print(f"{split}: dropped {dropped} prompts longer than {args.max_prompt_tokens} tokens")
    return prompts
