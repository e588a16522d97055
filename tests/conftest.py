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


def _repo_data_state() -> dict[str, int]:
    shards = REPO / "data" / "shards"
    return {str(f): f.stat().st_mtime_ns for f in shards.rglob("*") if f.is_file()} if shards.is_dir() else {}


@pytest.fixture(scope="module", autouse=True)
def _repo_data_untouched(request):
    """The suite writes data only under pytest's temporary directories: a test that runs train.py or an evaluation
    without `paths.data_dir` would write into the checkout's own `data/shards` (rebuilding it at the tests' small
    scale under whatever the user trains on it: two Ovis2.5 command tests did, mid-run of a benchmark). Checked
    around every test module (~30 ms a check where the data is built), so the failure names the module that wrote."""
    before = _repo_data_state()
    yield
    changed = sorted(set(before.items()) ^ set(_repo_data_state().items()))
    assert not changed, (f"{request.node.nodeid} wrote into {REPO / 'data' / 'shards'}: "
                         f"{[name for name, _ in changed][:5]}")


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


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> Path:
    """A `paths.data_dir` holding the shapes dataset at the tests' scale (helpers.SMALL_DATA), built once per
    session: building it takes seconds, and a dozen tests (and their train.py subprocesses) read it. The parts some
    runs add (videos, thinking, preference pairs, scene sets) have their own stamps, so whichever test needs one
    first builds it here and the rest find it. Read only: a test that changes data writes its own copy."""
    from ovis_lit.data.shapes import ensure_shapes_dataset

    from .helpers import SMALL_DATA

    root = tmp_path_factory.mktemp("shapes-data")
    ensure_shapes_dataset(root / "shapes", scale=SMALL_DATA)
    return root


@pytest.fixture(scope="session")
def fsdp_runs(tmp_path_factory, shapes_data):
    """helpers.FsdpRuns, run: every fit the FSDP tests (test_fsdp, test_lora, test_token_budget) compare, in one
    launch of one process and one launch of two."""
    from ovis_lit.data.shapes import ensure_shapes_dataset

    from .helpers import SMALL_DATA, FsdpRuns

    # the job `budget` reads ovis25_tiny's stage-3 sources, videos and thinking answers among them (what its
    # DataModule's prepare_data would build; built here, by one process, before either launch reads them)
    ensure_shapes_dataset(shapes_data / "shapes", scale=SMALL_DATA, videos=True, thinking=True)
    return FsdpRuns(tmp_path_factory.mktemp("fsdp-runs"), shapes_data, FIXTURE / "checkpoint").run()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
