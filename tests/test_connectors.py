"""Connector arms (issue 17): build, train, freeze by stage, export and re-import, matched parameter counts."""

import pytest
import torch

from ovis_lit.constants import IGNORE_ID, IMAGE_ATOM_ID, INDICATOR_IDS
from ovis_lit.interop.original_export import export_original
from ovis_lit.interop.ovis_lit_layout import export_ovis_lit, load_ovis_lit
from ovis_lit.model.build import build_ovis, connector_parameters
from ovis_lit.model.connector import (
    CONNECTORS,
    IndicatorEmbedding,
    ProjectorVisualTokenizer,
    matched_hidden,
    mlp_parameters,
    ovis_parameters,
)
from ovis_lit.model.source import ModelSource
from ovis_lit.processing.image import ImagePreprocessor
from ovis_lit.processing.processor import OvisProcessor
from ovis_lit.processing.tokenizer import byte_level_tokenizer
from ovis_lit.training.checkpoints import load_model_weights
from ovis_lit.training.freezing import apply_trainable
from ovis_lit.training.tau import TauAnnealing
from ovis_lit.training.vocab_diagnostics import vocabulary_problem

from .tiny import tiny_spec

FEATURE_DIM, LLM_DIM, VOCAB, N_IND = 16 * 2 * 2, 32, 64, 5  # tiny_spec: ViT width 16, hidden_stride 2, qwen2 width 32


def _batch(n_crops=2, tokens_per_crop=4):
    """Two rows: indicator, the crop's -300s, indicator, a few supervised text ids (one crop each)."""
    rows = []
    for _ in range(n_crops):
        rows.append([INDICATOR_IDS[0]] + [IMAGE_ATOM_ID] * tokens_per_crop + [INDICATOR_IDS[1], 5, 6, 7, 8])
    ids = torch.tensor(rows)
    labels = ids.masked_fill(ids < 0, IGNORE_ID)
    return ids, torch.ones_like(ids), labels, torch.randn(n_crops, 3, 42, 42)


@pytest.mark.parametrize("connector", CONNECTORS)
def test_each_connector_trains_a_few_steps(connector):
    model = build_ovis(tiny_spec(connector=connector))
    ids, mask, labels, pixels = _batch()
    out = model(ids, mask, labels, pixels)
    assert out.merged.inputs_embeds.shape == (2, ids.shape[1], LLM_DIM)
    # the visual tokens exist for the Ovis arms only; the MLP arms embed directly
    assert (out.merged.visual_tokens is None) == (connector in ("mlp", "mlp_wide"))
    apply_trainable(model, ["visual_tokenizer.head", "vte"])  # stage 1's connector part
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = []
    for _ in range(4):
        optimiser.zero_grad()
        loss = model(ids, mask, labels, pixels).loss
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    # the connector moved, and only the connector: its head and its table (the indicator rows were read)
    assert changed and all(n.startswith(("visual_tokenizer.head.", "vte.")) for n in changed), changed
    assert any(n.startswith("visual_tokenizer.head.") for n in changed)
    assert "vte.weight" in changed


def test_mlp_arms_replace_head_and_table():
    mlp = build_ovis(tiny_spec(connector="mlp"))
    assert isinstance(mlp.visual_tokenizer, ProjectorVisualTokenizer) and isinstance(mlp.vte, IndicatorEmbedding)
    assert mlp.vte.weight.shape == (N_IND, LLM_DIM)
    assert vocabulary_problem(mlp) is not None and vocabulary_problem(build_ovis(tiny_spec())) is None
    # LLaVA-1.5: Linear(features, d) -> GELU -> Linear(d, d)
    assert [type(m).__name__ for m in mlp.visual_tokenizer.head] == ["Linear", "GELU", "Linear"]
    assert mlp.visual_tokenizer.head[0].weight.shape == (LLM_DIM, FEATURE_DIM)
    wide = build_ovis(tiny_spec(connector="mlp_wide"))
    assert wide.visual_tokenizer.head[0].weight.shape == (VOCAB, FEATURE_DIM)  # hidden = the visual vocabulary
    assert wide.visual_tokenizer.head[2].weight.shape == (LLM_DIM, VOCAB)


def test_indicators_read_the_indicator_table_in_mlp_arms():
    model = build_ovis(tiny_spec(connector="mlp"))
    ids = torch.tensor([[5, INDICATOR_IDS[0], INDICATOR_IDS[4], 6]])
    embeds = model.embed_text(ids)
    assert torch.equal(embeds[0, 1], model.vte.weight[0]) and torch.equal(embeds[0, 2], model.vte.weight[4])


def test_ovis_arms_set_their_tokenize_function_and_tau_anneals_gumbel():
    assert build_ovis(tiny_spec(connector="ovis")).visual_tokenizer.tokenize_function == "softmax"
    assert build_ovis(tiny_spec(connector="ovis_hard")).visual_tokenizer.tokenize_function == "st_argmax"
    gumbel = build_ovis(tiny_spec(connector="ovis_gumbel"))
    assert gumbel.visual_tokenizer.tokenize_function == "gumbel_argmax"
    with pytest.raises(ValueError, match="tokenizes with st_argmax"):
        build_ovis(tiny_spec(connector="ovis_hard", tokenize_function="gumbel_argmax"))

    class _Module:
        model = gumbel

    class _Trainer:
        global_step, max_steps = 5, 10

    TauAnnealing(5.0, 0.05).on_train_batch_start(_Trainer(), _Module(), None, 0)
    assert gumbel.visual_tokenizer.tau == pytest.approx(2.525)


@pytest.mark.parametrize("connector", CONNECTORS)
def test_stage_patterns_select_the_connector_like_the_ovis_head(connector):
    model = build_ovis(tiny_spec(connector=connector))
    s1 = apply_trainable(model, ["visual_tokenizer.head", "vte", "visual_tokenizer.backbone.layers.-1"])
    assert {n.split(".")[0] for n in s1} == {"visual_tokenizer", "vte"}
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith("llm."))
    assert all(p.requires_grad for p in model.visual_tokenizer.head.parameters()) and model.vte.weight.requires_grad
    s2 = apply_trainable(model, ["visual_tokenizer", "vte"])
    assert any(n.startswith("visual_tokenizer.backbone.") for n in s2)
    assert not any(n.startswith("llm.") for n in s2)
    s3 = apply_trainable(model, ["all"])
    assert any(n.startswith("llm.") for n in s3) and "vte.weight" in s3


def test_matched_option_matches_the_ovis_parameters():
    ovis = connector_parameters(build_ovis(tiny_spec()))
    assert ovis == ovis_parameters(FEATURE_DIM, VOCAB, N_IND, LLM_DIM) == FEATURE_DIM * 59 + 2 * 59 + VOCAB * LLM_DIM
    one_unit = FEATURE_DIM + 1 + LLM_DIM
    for connector in ("mlp", "mlp_wide"):
        model = build_ovis(tiny_spec(connector=connector, connector_hidden="matched"))
        hidden = model.visual_tokenizer.head[0].out_features
        assert hidden == matched_hidden(FEATURE_DIM, VOCAB, N_IND, LLM_DIM)
        count = connector_parameters(model)
        assert count == mlp_parameters(FEATURE_DIM, hidden, LLM_DIM, N_IND)
        assert abs(count - ovis) <= one_unit / 2, (connector, count, ovis)
    # unmatched, the LLaVA-width mlp is much smaller than the Ovis head + table here
    assert abs(connector_parameters(build_ovis(tiny_spec(connector="mlp"))) - ovis) > one_unit
    with pytest.raises(ValueError, match="connector_hidden"):
        build_ovis(tiny_spec(connector="mlp", connector_hidden=0))


def _processor():
    return OvisProcessor(byte_level_tokenizer("qwen"), "qwen", ImagePreprocessor(side=42), tokens_per_crop=4)


@pytest.mark.parametrize("connector", CONNECTORS)
def test_export_and_reimport_in_ovis_lit_layout(tmp_path, connector):
    source = ModelSource(name="tiny", spec=tiny_spec(connector=connector, connector_hidden=24))
    model = source.build()
    out = export_ovis_lit(model, source, _processor(), tmp_path / "export")
    again, processor = load_ovis_lit(out)
    assert type(again.visual_tokenizer) is type(model.visual_tokenizer)
    assert again.visual_tokenizer.tokenize_function == model.visual_tokenizer.tokenize_function
    sa, sb = model.state_dict(), again.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert processor.chat_format == "qwen" and processor.tokens_per_crop == 4
    # init_from reads the layout too (a fresh model of the same arm takes every weight)
    fresh = source.build()
    load_model_weights(fresh, out)
    assert all(torch.equal(fresh.state_dict()[k], sa[k]) for k in sa)


def test_the_original_layout_refuses_mlp_arms(tmp_path):
    with pytest.raises(ValueError, match="no MLP connector.*ovis-lit's own layout"):
        export_original(build_ovis(tiny_spec(connector="mlp")), _processor(), tmp_path)
    export_original(build_ovis(tiny_spec(connector="ovis_hard")), _processor(), tmp_path)  # Ovis arms: as before


def test_model_connector_option():
    assert ModelSource(spec=tiny_spec(), connector="mlp_wide").spec["connector"] == "mlp_wide"
    with pytest.raises(ValueError, match="unknown connector"):
        ModelSource(spec=tiny_spec(), connector="qformer")
    with pytest.raises(ValueError, match="set one of them"):
        ModelSource(spec=tiny_spec(connector="mlp"), connector="ovis")
    with pytest.raises(ValueError, match="original Ovis directory"):
        ModelSource(spec={}, pretrained="/nowhere", connector="mlp")
