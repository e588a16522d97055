"""Training gradients: equal to the original code's on the reference fixtures, through the fast path (what training
runs) and the plain path; and the plain path equal to the fast path on random models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file

from ovis_lit.constants import IGNORE_ID, IMAGE_ATOM_ID, INDICATOR_IDS
from ovis_lit.interop.original import load_original
from ovis_lit.interop.original_export import original_state_dict

from .conftest import FIXTURE
from .parity import expand_original_batch
from .tiny import tiny_model

GRAD_ATOL = 1e-5  # the bound on the largest absolute difference from the original's gradients


def assert_gradients_match(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    expected_grads: Path,
    to_original_names: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
) -> None:
    """The training loss's gradient w.r.t. every parameter equals the original's (`expected_grads`, under the
    original checkpoint's names; `to_original_names` maps ours, e.g. dropping a tied lm_head)."""
    model.train().zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    ours = to_original_names({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    want = load_file(expected_grads)
    assert sorted(ours) == sorted(want)
    errors = {name: (ours[name] - want[name]).abs().max().item() for name in want}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GRAD_ATOL, f"{worst}: max abs difference {errors[worst]:.3g}"


@dataclass
class GradientFixture:
    """One reference fixture: how to build the model and the batch the original's gradients were taken on."""

    directory: Path
    load: Callable[[Path], torch.nn.Module]
    batch: Callable[[dict[str, torch.Tensor], torch.nn.Module], dict[str, torch.Tensor]]
    to_original_names: Callable[[torch.nn.Module], Callable[[dict], dict]]


def _ovis16_batch(t: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # The text-only sample (2) carries a zero image in the original's batch but no atom: it contributes no crop here.
    crops = torch.cat([t[f"forward.sample{i}.pixel_values"] for i in (0, 1, 3)])
    original = {k.rsplit(".", 1)[-1]: v for k, v in t.items() if k.startswith("forward.batch.")}
    batch = expand_original_batch(original, model.visual_tokenizer.tokens_per_crop())  # one -300 per visual token
    return {**batch, "pixel_values": crops}


GRADIENT_FIXTURES = {
    "ovis16": GradientFixture(
        directory=FIXTURE,
        load=lambda d: load_original(d / "checkpoint")[0],
        batch=_ovis16_batch,
        to_original_names=lambda model: lambda grads: original_state_dict(model, grads),
    ),
    # Ovis2 / Ovis2.5: add an entry once their importers exist.
}


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("name", sorted(GRADIENT_FIXTURES))
def test_training_gradients_equal_the_originals(name, fast_path):
    case = GRADIENT_FIXTURES[name]
    model = case.load(case.directory)
    model.fast_path = fast_path
    batch = case.batch(load_file(case.directory / "expected.safetensors"), model)
    assert_gradients_match(model, batch, case.directory / "expected_grads.safetensors", case.to_original_names(model))


# ------------------------------------------------------------------------------------------- plain vs fast path
S = 42  # crop side of the tiny backbones


def _mixed_batch(crops_per_sample=(2, 0, 1, 3), pad_extra=(0, 3, 1, 0), text_len=6, per_crop=4):
    """Right-padded ids with indicators around each crop's `per_crop` -300s (the tiny models' tokens per crop),
    samples of different sizes (0 to 3 crops) and labels on each text tail; crops [N, 3, S, S]."""
    rows, labels = [], []
    for n, extra in zip(crops_per_sample, pad_extra):
        ids = [5, 6]
        for _ in range(n):
            ids += [INDICATOR_IDS[0], *[IMAGE_ATOM_ID] * per_crop, INDICATOR_IDS[-1]]
        ids += list(range(10, 10 + text_len + extra))
        rows.append(ids)
        labels.append([IGNORE_ID] * (len(ids) - 3) + ids[-3:])
    longest = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), longest, dtype=torch.long)
    label_t = torch.full_like(input_ids, IGNORE_ID)
    mask = torch.zeros_like(input_ids)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        input_ids[i, : len(r)] = torch.tensor(r)
        label_t[i, : len(r)] = torch.tensor(lab)
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_t,
            "pixel_values": torch.randn(sum(crops_per_sample), 3, S, S)}


def _run(model, batch, fast_path):
    """(training loss, full logits, every parameter's gradient) with one path; gumbel noise drawn alike."""
    model.fast_path = fast_path
    model.train().zero_grad(set_to_none=True)
    torch.manual_seed(3)
    loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.manual_seed(3)
    with torch.no_grad():
        logits = model(**batch, return_logits=True).logits
    return loss.detach(), logits, grads


def assert_paths_equal(model, batch, atol=1e-5):
    loss_f, logits_f, grads_f = _run(model, batch, fast_path=True)
    loss_p, logits_p, grads_p = _run(model, batch, fast_path=False)
    assert abs(loss_f.item() - loss_p.item()) <= atol
    assert (logits_f - logits_p).abs().max().item() <= atol
    assert sorted(grads_f) == sorted(grads_p)
    for name in grads_f:
        err = (grads_f[name] - grads_p[name]).abs().max().item()
        assert err <= atol, f"{name}: {err:.3g}"


@pytest.mark.parametrize(
    "llm,tokenize_function",
    [("qwen2", "softmax"), ("gemma2", "softmax"), ("qwen2", "st_argmax"), ("qwen2", "st_softmax"),
     ("qwen2", "gumbel_argmax")],
)
def test_plain_path_equals_fast_path(llm, tokenize_function):
    model = tiny_model(llm=llm, tokenize_function=tokenize_function)
    assert_paths_equal(model, _mixed_batch())


def test_plain_path_equals_fast_path_on_the_fixture_model():
    case = GRADIENT_FIXTURES["ovis16"]
    model = case.load(case.directory)
    assert_paths_equal(model, case.batch(load_file(case.directory / "expected.safetensors"), model))


def test_fast_path_is_the_default_and_selects_the_fused_softmax():
    model = tiny_model()
    assert model.fast_path
    logits = torch.randn(2, 4, 59)
    assert model._fuse_softmax(logits)
    assert not model._fuse_softmax(logits.double())  # the table is float32: not the same function
    model.fast_path = False
    assert not model._fuse_softmax(logits)
    assert not tiny_model(fast_path=False).fast_path  # from the spec (conf/model/*.yaml: spec.fast_path)


def test_the_contiguous_vit_stream_belongs_to_the_fast_path():
    from ovis_lit.model.vision import residual_stream_is_contiguous

    model = tiny_model()
    assert residual_stream_is_contiguous(model.visual_tokenizer.backbone)
    model.fast_path = False  # the plain path keeps the original's memory layout (its float32 rounding, bitwise)
    assert not residual_stream_is_contiguous(model.visual_tokenizer.backbone)


def test_fast_path_switch_reaches_an_imported_checkpoint():
    from ovis_lit.model.source import build_model

    model = build_model({"pretrained": str(FIXTURE / "checkpoint"), "spec": {"fast_path": False}})
    assert not model.fast_path
    assert build_model({"pretrained": str(FIXTURE / "checkpoint")}).fast_path
