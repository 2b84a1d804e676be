"""Plain helpers shared by several test modules (fixtures live in conftest.py; no test module imports another)."""
import importlib
import json
import os
import shutil

from utils import cli
from utils.rewards import RewardModel

D = "toy"  # the dataset name in the stage scripts' file names
NEW_TOKENS = 5


def tag(folder):
    """The model name in file names for a local folder: its base name."""
    return os.path.basename(os.path.normpath(folder))


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def llm_args(model_dir, out, qfile, *extra, batch_size=3):
    """The flags of stages 1 and 4 on a local model folder: greedy, NEW_TOKENS new tokens, on the CPU."""
    return ["--model_name", model_dir, "--dataset_name", D, "--data_file", qfile, "--device", "cpu",
            "--max_new_tokens", str(NEW_TOKENS), "--batch_size", str(batch_size), "--output_dir", out, *extra]


def copy_of(folder, tmp_path):
    """The test's own copy of a shared (module- or session-scoped) fixture folder, for a test that writes into it:
    the other tests keep reading the fixture as it was built. copytree keeps the files' modification times."""
    copy = str(tmp_path / os.path.basename(os.path.normpath(folder)))
    shutil.copytree(folder, copy, symlinks=True)
    return copy


def snapshot(root):
    """Every file under root and its bytes: equal snapshots mean nothing was written."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def run_in_process(command, capfd):
    """The script's own entry point (main_guard(main)) in this process: (exit status, stdout, stderr)."""
    module = importlib.import_module(command[0].removesuffix(".py"))
    capfd.readouterr()
    try:
        cli.main_guard(lambda: module.main(command[1:]))
        code = 0
    except SystemExit as exit:
        code = exit.code
    out, err = capfd.readouterr()
    return code, out, err


def planted_score(text):
    """A planted reward that tells almost any two texts apart: the sum of the character codes, modulo 97."""
    return float(sum(map(ord, text)) % 97)


class PlantedReward(RewardModel):
    name = "planted"

    def inputs(self, _conversations, generations):
        return list(generations)

    def score_batch(self, texts):
        return [planted_score(t) for t in texts]
