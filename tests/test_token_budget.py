"""Token-budget batching (data/batching.py, BatchStream with `token_budget`): no batch over the budget, every sample
exactly once per epoch, over-budget samples counted, greedy packing, and exact resume (mixed sources, skips)."""

import io
import json
import tarfile
import tempfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovis_lit.data.batching import FixedCount, TokenBudget, batches, sample_tokens
from ovis_lit.data.stream import BatchStream, Source, StreamState
from ovis_lit.rejection import Rejected


def _write_shards(directory: Path, name: str, lengths: list[int], per_shard: int) -> tuple[str, ...]:
    """Shards of records {"n": tokens}; a negative n is a record the sample builder refuses."""
    urls = []
    for first in range(0, len(lengths), per_shard):
        path = directory / f"{name}-{first // per_shard:04d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(first, min(first + per_shard, len(lengths))):
                data = json.dumps({"n": lengths[i]}).encode()
                info = tarfile.TarInfo(f"{name}{i:05d}.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        urls.append(str(path))
    return tuple(urls)


def _to_sample(record):
    n = json.loads(record["json"])["n"]
    if n < 0:
        raise Rejected("invalid_sample", record["__key__"])
    return SimpleNamespace(input_ids=[0] * n, meta={"key": record["__key__"]})


def _collate(samples):
    return {"lengths": [sample_tokens(s) for s in samples], "epochs": [s.meta["epoch"] for s in samples]}


def _stream(sources, budget, train=True, state=None, shuffle=8):
    return BatchStream(sources, _to_sample, _collate, None, seed=3, shuffle_buffer=shuffle, train=train,
                       state=state, token_budget=budget)


def _check_packing(out, budget):
    for b in out:
        assert sum(b["lengths"]) <= budget
        assert b["lengths"], "no empty batch"
    # greedy: a batch closes only when the next sample would not fit (or the pass ends)
    for b, nxt in zip(out, out[1:]):
        assert sum(b["lengths"]) + nxt["lengths"][0] > budget


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=60), budget=st.integers(8, 80),
       per_shard=st.integers(1, 9))
def test_budget_batches_never_exceed_and_cover_every_sample_once_per_epoch(lengths, budget, per_shard):
    over = sum(n > budget for n in lengths)
    with tempfile.TemporaryDirectory() as tmp:
        source = Source("s", _write_shards(Path(tmp), "s", lengths, per_shard))
        admissible = sorted(f"s/s{i:05d}" for i, n in enumerate(lengths) if n <= budget)

        # one pass (validation): every sample once, the over-budget ones counted
        single = list(_stream([source], budget, train=False))
        _check_packing(single, budget)
        assert sorted(k for b in single for k in b["keys"]) == admissible
        if not admissible:  # no batch to carry the skips (the stream logs them)
            return
        skipped = sum((Counter(b["skipped"]) for b in single), Counter())
        assert skipped == Counter({"over_token_budget": over} if over else {})
        # training: endless, shuffled; epochs 0 and 1 each hold every admissible sample exactly once
        by_epoch: dict[int, list[str]] = {0: [], 1: []}
        out = []
        for b in _stream([source], budget):
            out.append(b)
            for key, epoch in zip(b["keys"], b["epochs"]):
                by_epoch.setdefault(epoch, []).append(key)
            if len(by_epoch) > 2:  # epoch 2 started: 0 and 1 are complete
                break
            assert len(out) < 10 * len(lengths) + 10
        _check_packing(out, budget)
        assert sorted(by_epoch[0]) == admissible and sorted(by_epoch[1]) == admissible
        assert by_epoch[0] != by_epoch[1] or len(admissible) < 4  # reshuffled (not a guarantee for tiny sets)


def test_fixed_count_and_budget_rules():
    items = [(SimpleNamespace(input_ids=[0] * n), i) for i, n in enumerate([3, 4, 2, 5, 1, 6])]
    assert [[i for _, i in b] for b in batches(iter(items), TokenBudget(7))] == [[0, 1], [2, 3], [4, 5]]
    assert [[i for _, i in b] for b in batches(iter(items), TokenBudget(9))] == [[0, 1, 2], [3, 4], [5]]
    assert [[i for _, i in b] for b in batches(iter(items), FixedCount(4))] == [[0, 1, 2, 3], [4, 5]]
    assert not TokenBudget(5).admits(items[5][0]) and TokenBudget(6).admits(items[5][0])
    with pytest.raises(ValueError):
        TokenBudget(0)
    with pytest.raises(ValueError, match="batch_size or a token_budget"):
        BatchStream([Source("s", ("x.tar",))], _to_sample, _collate, None)


@pytest.mark.parametrize("budget", [40, None])
def test_resume_of_a_mixed_stream_with_skips_continues_exactly(tmp_path, budget):
    """Two weighted sources, refused records in both: a stream resumed from any batch's position gives the
    batches the uninterrupted stream gave. (A refused record must move its source's position: read again after a
    resume, it would shift what the mixer's later draws take.)"""
    a = [(-1 if i % 5 == 2 else 3 + i % 17) for i in range(40)]
    b = [(-1 if i % 3 == 0 else 2 + i % 23) for i in range(30)]
    sources = [Source("a", _write_shards(tmp_path, "a", a, 7), 0.6), Source("b", _write_shards(tmp_path, "b", b, 4), 0.4)]

    def stream(state=None):
        s = BatchStream(sources, _to_sample, _collate, 5 if budget is None else None, seed=3, shuffle_buffer=6,
                        state=state, token_budget=budget)
        return iter(s)

    it = stream()
    straight = [next(it) for _ in range(24)]
    for cut in range(1, 24):
        state = StreamState.from_dict({"workers": {"0": {k: straight[cut - 1]["stream"][k]
                                                         for k in ("sources", "draws")}}, "next_worker": 0})
        it = stream(state)
        resumed = [next(it) for _ in range(24 - cut)]
        assert [r["keys"] for r in resumed] == [s["keys"] for s in straight[cut:]], f"resumed after batch {cut}"
        # each skip is counted once: in the batch that consumed it, in both runs
        assert [r["skipped"] for r in resumed] == [s["skipped"] for s in straight[cut:]]
    assert sum(sum(s["skipped"].values()) for s in straight) > 3


# ------------------------------------------------------------------------------------ the DataModule, Ovis2.5 tiny
@pytest.fixture(scope="module")
def data_dir(shapes_data):
    return shapes_data


def _datamodule(tmp_path, data_dir, budget, workers=2):
    from ovis_lit.training.run import build_processor, instantiate_datamodule

    from .helpers import compose_train

    cfg = compose_train(["stage=s3", "model=ovis25_tiny", f"data.num_workers={workers}", f"data.token_budget={budget}"],
                        tmp_path, data_dir)
    dm = instantiate_datamodule(cfg)
    dm.attach(build_processor(cfg))
    dm.prepare_data()
    return dm


def test_ovis25_tiny_budget_batches_fit_and_resume_exactly(tmp_path, data_dir):
    import torch

    budget = 700
    dm = _datamodule(tmp_path, data_dir, budget)
    it = iter(dm.train_dataloader())
    straight = [next(it) for _ in range(7)]
    del it
    sizes = [b["input_ids"].shape[0] for b in straight]
    for b in straight:
        tokens = int(b["attention_mask"].sum())  # visual (one id each) + text tokens
        assert tokens <= budget and tokens > budget - 100  # full up to about one sample (~60-95 tokens here)
        assert int(b["grid_thws"].prod(dim=1).sum()) == b["pixel_values"].shape[0]
    assert len(set(sizes)) > 1, sizes  # the sample count follows the samples' lengths
    for b in straight[:3]:
        dm.observe(b)
    assert dm.consumed == sum(sizes[:3])  # what the stage summary counts as samples (not steps x batch_size)
    resumed_dm = _datamodule(tmp_path, data_dir, budget)
    resumed_dm.load_state_dict(json.loads(json.dumps(dm.state_dict())))  # as it travels in a checkpoint
    assert resumed_dm.consumed == sum(sizes[:3])
    it = iter(resumed_dm.train_dataloader())
    for a in straight[3:]:
        b = next(it)
        assert a["keys"] == b["keys"]
        for k in ("input_ids", "labels", "pixel_values", "grid_thws"):
            assert torch.equal(a[k], b[k]), k
    # the budget is part of the stream's layout: another budget cannot resume it exactly
    other = _datamodule(tmp_path, data_dir, budget + 1)
    with pytest.raises(ValueError, match="token_budget changed"):
        other.load_state_dict(json.loads(json.dumps(dm.state_dict())))


@pytest.mark.slow
def test_two_process_fsdp_equals_one_process_for_ovis25_tiny_with_budget_batches(fsdp_runs):
    """FSDP2 on 2 CPU processes (gloo), each rank taking the same token-budget batches of ovis25_tiny (their sample
    counts vary): the same losses and weights as one process. (The fits: conftest's `fsdp_runs`, job `budget`, 6
    steps on the session's shapes data.)"""
    import torch
    from safetensors.torch import load_file

    losses_1, _ = fsdp_runs.result("single", "budget")
    losses_2, reports = fsdp_runs.result("fsdp", "budget")
    single, sharded = fsdp_runs.dir("single", "budget"), fsdp_runs.dir("fsdp", "budget")
    sizes = json.loads((sharded / "batch_sizes.json").read_text())
    assert sizes == json.loads((single / "batch_sizes.json").read_text()) and len(set(sizes)) > 1
    assert len(losses_1) == 6 and losses_2 == pytest.approx(losses_1, rel=1e-5, abs=1e-6)
    assert all(r["world"] == 2 and r["dtensor"] == r["params"] for r in reports)
    one, two = load_file(single / "full.safetensors"), load_file(sharded / "full.safetensors")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
