"""Checks on the files of a local checkpoint directory before anything reads them.

Only JSON and safetensors are read from a checkpoint directory, and only files inside it: a weight index that names
`../elsewhere.safetensors`, or a weight file that is a symlink to somewhere else, is refused (the one exception is
the Hugging Face hub cache, whose snapshot folders hold symlinks to the same model's `blobs/`). Every refusal is a
ValueError (or FileNotFoundError) that names the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")  # never read: loading them can run code


def read_json_file(path: str | Path) -> dict[str, Any]:
    """A JSON object from a file (a UTF-8 byte-order mark, as some editors write, is accepted)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid UTF-8 JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, found a {type(value).__name__}")
    return value


def _allowed_roots(directory: Path) -> list[Path]:
    root = directory.resolve()
    roots = [root]
    if root.parent.name == "snapshots":  # <hub cache>/models--org--name/snapshots/<rev>/ -> ../../blobs/<hash>
        roots.append(root.parent.parent / "blobs")
    return roots


def file_inside(directory: str | Path, name: str) -> Path:
    """`directory / name`, refused unless it is a regular file that really lies inside `directory`."""
    directory = Path(directory)
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"{directory}: refused file name {name!r}: files must lie inside the checkpoint directory")
    path = directory / name
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in _allowed_roots(directory)):
        raise ValueError(f"{path}: refused: it resolves to {resolved}, outside {directory} (a symlink?)")
    if not resolved.is_file():
        raise FileNotFoundError(f"{path}: missing or not a regular file")
    return path


def safetensors_files(directory: str | Path) -> list[Path]:
    """The safetensors weight files of a checkpoint directory (the index's shards, or model.safetensors), each
    inside the directory and with a readable header. Pickled weight formats are never a fallback."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory} (only local paths are loaded)")
    if (directory / INDEX_FILE).exists():
        index = read_json_file(file_inside(directory, INDEX_FILE))
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{directory / INDEX_FILE}: no weight_map")
        names = sorted(set(weight_map.values()), key=str)
        bad = [n for n in names if not isinstance(n, str) or not n.endswith(".safetensors")]
        if bad:
            raise ValueError(f"{directory / INDEX_FILE}: refused: names files other than safetensors: {bad[:3]}")
        files = [file_inside(directory, n) for n in names]
    elif (directory / WEIGHTS_FILE).exists() or (directory / WEIGHTS_FILE).is_symlink():
        files = [file_inside(directory, WEIGHTS_FILE)]
    else:
        pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in directory.glob(pattern))
        found = sorted(p.name for p in directory.iterdir())
        why = f"; pickled weights ({', '.join(pickled)}) are never read" if pickled else ""
        raise FileNotFoundError(
            f"no {WEIGHTS_FILE} or {INDEX_FILE} in {directory} (found: {found}); only safetensors checkpoints load{why}"
        )
    for path in files:
        try:
            with safe_open(path, framework="pt"):  # reads and checks the header (a truncated file fails here)
                pass
        except Exception as e:
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    return files


def refuse_custom_code(directory: str | Path, config_name: str = "config.json", native: Any = None) -> None:
    """Refuse a directory whose `config_name` asks transformers for code shipped in the directory (`auto_map`)
    for a class transformers does not have. Loads pass trust_remote_code=False as well, so this is about saying
    so clearly (and before transformers could ever ask "run custom code? [y/N]"). `native`: the known model types
    (transformers' CONFIG_MAPPING); None refuses any auto_map."""
    path = Path(directory) / config_name
    if not path.exists():
        return
    config = read_json_file(path)
    auto_map = config.get("auto_map")
    if not auto_map:
        return
    model_type = config.get("model_type")
    if native is not None and isinstance(model_type, str) and model_type in native:
        return  # transformers' own class for this model type is used; the directory's code is ignored
    raise ValueError(
        f"{path}: refused: auto_map {auto_map!r} asks to run Python code from {directory} "
        f"(model_type {model_type!r} is not built into transformers); ovis-lit never runs code from a checkpoint"
    )


__all__ = ["INDEX_FILE", "WEIGHTS_FILE", "file_inside", "read_json_file", "refuse_custom_code", "safetensors_files"]
