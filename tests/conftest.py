"""Shared test set-up: offline, deterministic, small."""

import os

# Before anything imports transformers / wandb: never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "ovis16-reference-tiny"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return FIXTURE


@pytest.fixture(scope="session")
def expected() -> dict:
    return json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="session")
def expected_tensors() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE / "expected.safetensors")


@pytest.fixture(scope="session")
def reference():
    """The fixture checkpoint imported into ovis-lit (model in eval mode, processor)."""
    from ovis_lit.interop.original import load_original

    model, processor = load_original(FIXTURE / "checkpoint")
    return model.eval(), processor


@pytest.fixture(scope="session")
def qwen_tok(tmp_path_factory):
    from ovis_lit.processing.tokenizer import qwen_tokenizer

    return qwen_tokenizer(tmp_path_factory.mktemp("qwen-cache"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
