"""The real tasks by name: ``--task conala|django|multi30k|sst2`` (and ``builtin``).

Each entry is the part of a run configuration that belongs to the *task*, not to the model:
the reader, tokenizers, casing, length limits, vocabulary cut-off and output length, as the
recipes in ``configs/<task>/`` set them and as the published baselines in each data set's
README define the task. The data folder is ``--data`` when given, else ``$SEQ2SEQ_DATA/<task>``,
else ``../shared/data/<task>`` (relative to the working directory, as the recipes' paths are).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from seq2seq.data.example import DataError, DataFolderNotFound

__all__ = ["TASKS", "task_config", "task_data_dir"]

DATA_ROOT_ENV = "SEQ2SEQ_DATA"
DEFAULT_DATA_ROOT = Path("..") / "shared" / "data"

_CODE = {"src_tokenizer": "word", "tgt_tokenizer": "python", "lowercase_src": False, "slots": True}

TASKS: dict[str, dict[str, Any]] = {
    # The generated NL -> Python task: the defaults, no data folder.
    "builtin": {},
    # CoNaLa (Yin et al. 2018): intent -> one line of Python; official BLEU.
    "conala": {"data": {"format": "conala", **_CODE}},
    # Django (Oda et al. 2015): one line of pseudo-code -> one line of Python; exact match.
    "django": {"data": {"format": "django", **_CODE}},
    # Multi30k de -> en, word level: Moses-tokenized, lower-cased, min frequency 2, at most 50
    # tokens (the setting of issue 7's speed benchmark and of OpenNMT-py's baseline); sacreBLEU.
    "multi30k": {
        "data": {"format": "parallel", "src_lang": "de", "tgt_lang": "en", "src_tokenizer": "moses",
                 "tgt_tokenizer": "moses", "lowercase_src": True, "lowercase_tgt": True,
                 "max_src_len": 50, "max_tgt_len": 50},
        "vocab": {"min_freq": 2},
        "decode": {"max_len": 60},
    },
    # SST-2 (GLUE) as seq2seq: sentence -> "negative" / "positive"; accuracy of the generated label.
    "sst2": {
        "data": {"format": "tsv", "src_fields": ["sentence", "content"], "tgt_field": "label",
                 "label_map": {"0": "negative", "1": "positive"}, "src_tokenizer": "space",
                 "tgt_tokenizer": "space", "lowercase_src": True, "max_src_len": 60, "max_tgt_len": 2},
        "decode": {"max_len": 3},
    },
}


def task_data_dir(name: str, data: str | None = None) -> Path:
    """The folder of task ``name``: ``data`` if given, else under $SEQ2SEQ_DATA or ../shared/data."""
    if data:
        return Path(data)
    root = os.environ.get(DATA_ROOT_ENV)
    return (Path(root) if root else DEFAULT_DATA_ROOT) / name


def task_config(name: str, data: str | None = None) -> dict[str, Any]:
    """The config tree of task ``name`` with its data folder filled in (a fresh copy).

    An unknown name or a missing folder is a :class:`DataError` that says what to pass instead.
    """
    if name not in TASKS:
        raise DataError(f"--task {name!r}: unknown task; choose one of {', '.join(TASKS)}")
    tree = copy.deepcopy(TASKS[name])
    if name == "builtin":
        if data:
            raise DataError("--task builtin generates its data; leave out --data (or name the task of that folder)")
        return tree
    folder = task_data_dir(name, data)
    if not folder.is_dir():
        where = "--data" if data else (f"${DATA_ROOT_ENV}/{name}" if os.environ.get(DATA_ROOT_ENV) else f"{DEFAULT_DATA_ROOT / name}")
        raise DataFolderNotFound(f"--task {name}: data folder {folder} not found ({where}); "
                                 f"pass --data PATH to the {name} folder or set {DATA_ROOT_ENV} to the folder that holds it")
    tree["data"]["path"] = str(folder)
    return tree
