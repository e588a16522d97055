"""FSDP2 through Lightning's ModelParallelStrategy on 2 CPU processes (gloo): sharding, frozen parameters,
equality with a 1-process run, and consolidation of the sharded checkpoint into the original Ovis layout."""

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


# Every fit here runs in conftest's `fsdp_runs` (helpers.FsdpRuns: its jobs `main`, `tied`, `pretrained`, `resumed`).


def test_two_process_fsdp_shards_and_matches_one_process(fsdp_runs):
    (losses_1, _), (losses_2, reports) = fsdp_runs.result("single", "main"), fsdp_runs.result("fsdp", "main")
    assert len(losses_1) == len(losses_2) == 10
    assert losses_2 == pytest.approx(losses_1, rel=1e-5, abs=1e-6)
    assert losses_1[-1] < losses_1[0]  # it trains
    for report in reports:
        assert report["world"] == 2
        assert report["dtensor"] == report["params"]  # every parameter is a DTensor shard
        assert report["local_numel"] < 0.6 * report["full_numel"]  # each rank holds about half


def test_frozen_llm_gets_no_gradient_and_no_optimizer_state(fsdp_runs):
    _, reports = fsdp_runs.result("fsdp", "main")
    for report in reports:
        assert report["trainable"] and all(n.startswith(("visual_tokenizer.", "vte.")) for n in report["trainable"])
        assert report["with_optimizer_state"] == report["trainable"]
        assert report["frozen_with_grad"] == []


def test_final_weights_match_one_process(fsdp_runs):
    one = load_file(fsdp_runs.dir("single", "main") / "full.safetensors")
    two = load_file(fsdp_runs.dir("fsdp", "main") / "full.safetensors")
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6, msg=k)


def test_sharded_checkpoint_consolidates_to_an_original_layout_export(fsdp_runs, tmp_path):
    from ovis_lit.data import shapes
    from ovis_lit.interop.consolidate import export_sharded_checkpoint, is_sharded_checkpoint
    from ovis_lit.interop.original import load_original
    from ovis_lit.processing.image import ImagePreprocessor
    from ovis_lit.processing.processor import OvisProcessor

    ckpt = fsdp_runs.dir("fsdp", "main") / "ckpt"
    assert is_sharded_checkpoint(ckpt)
    processor = OvisProcessor(shapes.tokenizer(), "qwen", ImagePreprocessor(side=42), tokens_per_crop=4)
    export = export_sharded_checkpoint(ckpt, processor, tmp_path / "export")
    model, _ = load_original(export)
    full = load_file(fsdp_runs.dir("fsdp", "main") / "full.safetensors")
    state = model.state_dict()
    assert state.keys() == full.keys()
    for k, v in full.items():
        assert torch.equal(state[k], v), k


def test_tied_embeddings_stay_tied_and_match_one_process(fsdp_runs):
    """Stage 3 (everything trains) with tied input/output embeddings: rank 1 builds on the meta device and gets
    rank 0's weights after sharding; the tie must survive that and training. The sharded run also uses selective
    activation checkpointing (recompute inside FSDP units), which must not change the numbers either."""
    (losses_1, _), (losses_2, _) = fsdp_runs.result("single", "tied"), fsdp_runs.result("fsdp", "tied")
    assert len(losses_1) == 5 and losses_2 == pytest.approx(losses_1, rel=1e-5, abs=1e-6)
    two = load_file(fsdp_runs.dir("fsdp", "tied") / "full.safetensors")
    one = load_file(fsdp_runs.dir("single", "tied") / "full.safetensors")
    assert torch.equal(two["llm.lm_head.weight"], two["llm.model.embed_tokens.weight"])  # still tied
    for k in one:
        if k.endswith("k_proj.bias"):
            # softmax ignores a shift shared by all keys, so this gradient is rounding noise that Adam's
            # normalisation turns into +-lr steps of either sign: equal losses are the check here
            continue
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6, msg=k)


def test_init_from_a_sharded_checkpoint(fsdp_runs):
    """A chain of FSDP stages starts each stage from the previous one's sharded last.ckpt."""
    from ovis_lit.training.checkpoints import load_model_weights

    from .fsdp_job import spec
    from .tiny import tiny_model

    model = tiny_model(llm="qwen2", vocab=64)  # the shapes of fsdp_job.spec()
    assert spec()["llm"]["config"]["tie_word_embeddings"] is False
    load_model_weights(model, fsdp_runs.dir("fsdp", "main") / "ckpt")
    full = load_file(fsdp_runs.dir("fsdp", "main") / "full.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, full[k]), k


def test_pretrained_ovis_checkpoint_under_fsdp_matches_one_process(fsdp_runs):
    """model.pretrained under FSDP: rank 0 loads the original checkpoint (Gemma2, tied embeddings), rank 1 builds
    the skeleton on the meta device and receives its shards."""
    losses_1, _ = fsdp_runs.result("single", "pretrained")
    losses_2, reports = fsdp_runs.result("fsdp", "pretrained")
    assert len(losses_1) == 4 and losses_2 == pytest.approx(losses_1, rel=1e-5, abs=1e-6)
    assert all(r["dtensor"] == r["params"] for r in reports)


def test_resume_from_a_sharded_checkpoint(fsdp_runs):
    """Lightning's resume (ckpt_path) under FSDP2Strategy, whose load_checkpoint reads the shards through
    ovis_lit.interop.safe_dcp: the step count, weights and optimiser state come back and training continues."""
    losses_2, _ = fsdp_runs.result("fsdp", "main")
    losses, reports = fsdp_runs.result("fsdp", "resumed")  # 12 steps, from `main`'s checkpoint after 10
    assert [r["global_step"] for r in reports] == [12, 12]
    assert len(losses) == 2  # steps 11 and 12 only
    assert max(losses) < losses_2[0] and abs(losses[0] - losses_2[-1]) < 0.5 * (losses_2[0] - losses_2[-1]), (
        losses, losses_2)  # the trained weights came back, not a fresh init
