"""Artifact paths (the original file names) and atomic, pickle-free reading and writing."""
import dataclasses
import errno
import io
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager

import torch

from utils.errors import UsageError

# ----------------------------------------------------------------------------------------------------------------------
# Paths. {m} = model tag, {d} = dataset name, as in the original repository.

def adapter_path(root, m, d, method):
    """finetune_baseline.py's LoRA adapter folder (peft save_pretrained)."""
    return os.path.join(root, "trained_model", f"{m}_{d}_{method}_lora")


def adapter_meta_path(adapter):
    """The description beside an adapter folder: trained_model/X_lora -> trained_model/X_lora.meta.json."""
    return os.path.normpath(adapter) + ".meta.json"


def features_path(root, m, d, kind, split):
    """kind: token_wise_activations | mask | response | labels (features: safetensors; the original wrote .pth)."""
    ext = {"token_wise_activations": "safetensors", "mask": "pth", "response": "json", "labels": "json"}[kind]
    return os.path.join(root, "features", f"{m}_{d}_{kind}_{split}.{ext}")


def response_path(root, run_name):
    return os.path.join(root, "response", f"{run_name}.json")


OUTPUT_FOLDERS = {"reward": "final_reward", "evaluation": "evaluations", "judgment": "gpt-4-evaluations",
                  "results": "results"}


def output_stem(root, kind, name):
    """Where a stage writes `name` (without extension): reward -> final_reward/ (stage 5), evaluation ->
    evaluations/ (stage 6), judgment -> gpt-4-evaluations/ (stage 7), results -> results/ (tables, sweeps, plots)."""
    return os.path.join(root, OUTPUT_FOLDERS[kind], name)


def output_path(root, kind, name, ext="json"):
    """output_stem + extension; `name` may be a glob pattern."""
    return f"{output_stem(root, kind, name)}.{ext}"


def sidecar_path(path):
    """Where a file's description (what produced it) lives: response/X.json -> response/X.meta.json."""
    stem, _ = os.path.splitext(path)
    return stem + ".meta.json"


# ----------------------------------------------------------------------------------------------------------------------
# Atomic writes: a crash never leaves a truncated file under the final name.

WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO)


@contextmanager
def atomic_path(path):
    """Yield a temporary path in the target folder; rename it onto `path` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
        os.close(fd)
    except OSError as err:
        raise UsageError(f"cannot write to {folder}: {err.strerror}; choose a writable --output_dir")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno in WRITE_ERRORS:  # e.g. a full disk: the old file is untouched
            raise UsageError(f"writing {path} failed ({err.strerror}); free disk space and run the same command "
                             f"again (finished batches are kept)") from None
        raise


def save_json(obj, path):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1)
            f.write("\n")


def save_table(table, path, source):
    """Print a Markdown table and, if `path`, write it there with the line saying what wrote it (atomically)."""
    print(table)
    if path:
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write(f"{table}\nWritten by {source}.\n")


def save_csv(rows, path, fieldnames=None):
    """Rows (dicts) as a CSV file with a header; fieldnames default to the first row's keys, extra keys are left out."""
    import csv
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames or list(rows[0]), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def save_tensors(obj, path):
    """torch.save of tensors (or dicts/lists of tensors) only: readable with weights_only=True.

    Saved through memory: torch.save names the archive inside after the file, and the temporary name is random.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(buffer.getvalue())


def new_figure(**kwargs):
    """A matplotlib figure on the file-only backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(**kwargs)


def save_figure(fig, path):
    import matplotlib.pyplot as plt
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def load_json(path, stage_hint=None):
    require(path, stage_hint)
    fix = "; re-create it" + (f" with {stage_hint}" if stage_hint else "")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}){fix}")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not text (damaged, or a binary file of another kind){fix}")


def load_records(path, stage_hint, fields=("results",)):
    """A response file: a JSON list of records, each an object with `fields` (stage 1's or stage 4's output)."""
    records = load_json(path, stage_hint)
    if not isinstance(records, list) or not records or not all(
            isinstance(r, dict) and all(isinstance(r.get(k), str) for k in fields) for r in records):
        raise UsageError(f"{path} is not a response file (a list of records with {', '.join(fields)}); re-create "
                         f"it with {stage_hint}")
    return records


def load_reward_record(path, stage_hint):
    """A stage-5 result: an object with every reward (a list of numbers)."""
    record = load_json(path, stage_hint)
    rewards = record.get("rewards") if isinstance(record, dict) else None
    if not isinstance(rewards, list) or not all(isinstance(r, (int, float)) for r in rewards):
        raise UsageError(f"{path} is not a stage-5 result (an object with its 'rewards'); re-create it with "
                         f"{stage_hint}")
    return record


def load_tensors(path, stage_hint=None, mmap=False):
    """Load a tensor file without unpickling code (weights_only=True); mmap keeps large files on disk."""
    require(path, stage_hint)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # corrupt file, or a pickle of arbitrary objects
        raise UsageError(f"cannot read {path} as a tensor file ({type(err).__name__}); re-create it"
                         + (f" with {stage_hint}" if stage_hint else ""))


def file_sha256(path):
    """The sha256 of a file's bytes, or None if it is missing (what a result records about the file it read)."""
    import hashlib
    if not os.path.exists(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_or_none(path):
    """A small bookkeeping JSON file, or None if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def require(path, stage_hint=None):
    if not os.path.exists(path):
        hint = f"; run {stage_hint} first" if stage_hint else ""
        raise UsageError(f"{path} not found{hint}")


# ----------------------------------------------------------------------------------------------------------------------
# Run descriptions: every output says what produced it.

# flags that do not change what a stage writes (output_dir: a run folder that is moved or copied resumes;
# allow_other_value_model: a permission, whose outcome stage 4 records as settings_chosen_for_this_value_model)
NOT_SETTINGS = ("output_dir", "overwrite", "num_threads", "tensor_parallel_size", "pipeline_parallel_size",
                "data_parallel_size", "gpu_memory_utilization", "allow_other_value_model")


# flags added later, with their defaults: left out of the settings at the default, so that runs made before them
# keep their settings (and resume, and are not refused) as before
ADDED_LATER = {"adapter": None, "option_gate": None, "option_gate_threshold": None, "margin_weight": 0.0,
               "margin": 0.1, "rounds": 1, "refit_step_size": None, "refit_num_updates": None,
               "refit_engine": "auto", "edit": None}


def at_default(key, value):
    return key in ADDED_LATER and value == ADDED_LATER[key]


class Settings(dict):
    """run_settings' result. `record_only`: the config's fields that only describe the run (option(...,
    record_only=True)); they are left out, and same_settings ignores them in settings recorded before they were."""

    def __init__(self, values=(), record_only=()):
        super().__init__(values)
        self.record_only = frozenset(record_only)


def record_only_names(settings):
    """The record-only field names of a Settings (none for a plain dict, e.g. one read from a file)."""
    return getattr(settings, "record_only", frozenset())


def run_settings(config, ignore=(), **extra):
    """The options that determine a stage's outputs, as they round-trip through JSON."""
    from utils.config import as_dict
    record_only = [f.name for f in dataclasses.fields(config) if f.metadata.get("record_only")] \
        if dataclasses.is_dataclass(config) else []
    settings = {k: v for k, v in as_dict(config).items()
                if k not in NOT_SETTINGS and k not in ignore and k not in record_only}
    settings.update(extra)
    return Settings(json.loads(json.dumps({k: v for k, v in settings.items() if not at_default(k, v)},
                                          sort_keys=True)), record_only)


def same_settings(recorded, settings):
    """Equal settings, a later flag at its default counting as absent (runs recorded before it, or with it), and a
    record-only field (Settings.record_only) ignored on both sides."""
    if recorded is None or settings is None:
        return recorded is settings
    ignore = record_only_names(recorded) | record_only_names(settings)
    return ({k: v for k, v in recorded.items() if not at_default(k, v) and k not in ignore}
            == {k: v for k, v in settings.items() if not at_default(k, v) and k not in ignore})


def describe_run(config, settings=None, **extra):
    import transformers

    from utils.config import as_dict
    info = {
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "args": as_dict(config),
        "settings": run_settings(config) if settings is None else settings,  # what refuse_overwrite compares
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
    }
    info.update(extra)
    return info


def peak_memory_mb():
    """This process's peak memory so far, in MB: the resident-set high-water mark (ru_maxrss: model loading
    included), and on a GPU the allocator's peak as well."""
    import resource
    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # KB on Linux
    if torch.cuda.is_available():
        peak["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return peak


def write_sidecar(path, config, settings=None, **extra):
    save_json(describe_run(config, settings, **extra), sidecar_path(path))
