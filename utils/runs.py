"""Resumable, data-parallel stage runs: numbered batches, each saved when done, merged in the original order.

A stage's output X gets a work folder X.parts/ beside it, holding the settings of the run and one file per finished
batch (written atomically). Running the same command after a crash (Ctrl-C, kill -9, a lost machine) skips the
finished batches. Under `accelerate launch` (or torchrun), process r takes batches r, r + P, r + 2P, ...; the main
process merges once all are there. Batches are the same whatever the number of processes, so the outputs are too.
"""
import glob
import json
import os
import shutil
import sys
import time

from safetensors.torch import load_file
from tqdm.auto import tqdm

from utils.errors import UsageError
from utils.features import save_safetensors
from utils.io import read_json_or_none, record_only_names, same_settings, save_json, sidecar_path


def refuse_overwrite(path, settings, overwrite, description=None):
    """Refuse to replace `path` unless a run with the same settings made it or --overwrite.

    The settings are read from `description` (default: the file's .meta.json).
    """
    if overwrite or not os.path.exists(path):
        return
    previous = (read_json_or_none(description or sidecar_path(path)) or {}).get("settings")
    if same_settings(previous, settings):
        return
    if previous is None:
        reason = "nothing records the settings that made it"
    else:
        ignore = record_only_names(settings)
        changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k)
                         and k not in ignore)
        reason = "a run with other settings made it (" + ", ".join(
            f"--{k} {previous.get(k)} there, {settings.get(k)} now" for k in changed[:3]) + ")"
    raise UsageError(f"{path} exists and {reason}; pass --overwrite to replace it, or choose another --output_dir")


def written_with(path, settings):
    """True if `path` exists and the run that wrote it had these settings (its .meta.json says so)."""
    recorded = (read_json_or_none(sidecar_path(path)) or {}).get("settings")
    return os.path.exists(path) and same_settings(recorded, settings)


def process_group():
    """(rank, number of processes) under `accelerate launch` or torchrun; (0, 1) for a plain run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch
    from accelerate import PartialState
    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes


def same_batches(marker, expected):
    """An unfinished run's marker (.parts/run.json) against this run's: the same settings and number of batches."""
    return (isinstance(marker, dict) and marker.get("num_batches") == expected["num_batches"]
            and same_settings(marker.get("settings"), expected["settings"]))


class BatchRun:
    """The batches of one output file: which are done, which this process does, and their saved results."""

    def __init__(self, output, settings, num_batches, overwrite=False):
        self.output, self.num_batches = output, num_batches
        self.parts = output + ".parts"
        self.rank, self.world = process_group()
        refuse_overwrite(output, settings, overwrite)
        expected = {"settings": settings, "num_batches": num_batches}
        marker = os.path.join(self.parts, "run.json")
        previous = read_json_or_none(marker)
        if previous is not None and not same_batches(previous, expected) and not overwrite:
            raise UsageError(f"{self.parts} holds an unfinished run with other settings; run that command again to "
                             f"finish it, or pass --overwrite to discard it")
        if self.rank == 0:
            folder, name = os.path.split(os.path.abspath(output))
            for stale in glob.glob(os.path.join(folder, ".tmp-*" + glob.escape(name))):
                os.remove(stale)  # left by a process killed while writing
            if not same_batches(previous, expected):
                shutil.rmtree(self.parts, ignore_errors=True)
                save_json(expected, marker)
        else:
            while not same_batches(read_json_or_none(marker), expected):
                time.sleep(0.2)
        self.mine = list(range(self.rank, num_batches, self.world))
        self.todo = [i for i in self.mine if not self.is_done(i)]

    def path(self, i, ext):
        return os.path.join(self.parts, f"{i:06d}.{ext}")

    def is_done(self, i):
        return os.path.exists(self.path(i, "json"))  # written last

    def progress(self, desc):
        """This process's batches still to do, with a bar that counts the finished ones too."""
        done = len(self.mine) - len(self.todo)
        if done:
            print(f"resuming {self.output}: {done} of {len(self.mine)} batches already done", file=sys.stderr)
        if self.world > 1:
            desc = f"{desc} [process {self.rank + 1}/{self.world}]"
        return tqdm(self.todo, total=len(self.mine), initial=done, desc=desc, position=self.rank)

    def save(self, i, result, tensors=None):
        """Keep batch i's result (JSON-able) and tensors; the batch counts as done once this returns."""
        if tensors is not None:
            save_safetensors(tensors, self.path(i, "safetensors"))
        save_json(result, self.path(i, "json"))

    def load(self, i):
        with open(self.path(i, "json"), encoding="utf-8") as f:
            return json.load(f)

    def load_tensors(self, i):
        return load_file(self.path(i, "safetensors"))

    def merging(self):
        """True in the process that writes the outputs (the main one), once every batch is done."""
        if self.rank != 0:
            return False
        while not all(self.is_done(i) for i in range(self.num_batches)):
            time.sleep(0.5)  # the other processes' batches
        return True

    def results(self):
        return [self.load(i) for i in range(self.num_batches)]

    def finish(self):
        """The outputs are written: the batches are no longer needed."""
        shutil.rmtree(self.parts, ignore_errors=True)


def set_seed(seed):
    import random

    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(config):
    """Seed and thread count, common to every stage."""
    import torch
    if getattr(config, "num_threads", None):
        torch.set_num_threads(config.num_threads)
    set_seed(getattr(config, "seed", 0))


def seed_batch(seed, index):
    """Seed batch `index` on its own, so a sampled batch is the same whichever batches ran before it (resume,
    sharding)."""
    set_seed((seed * 1_000_003 + index) % 2 ** 32)
