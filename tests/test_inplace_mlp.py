"""In-place SwiGLU MLPs at inference (`model/inplace_mlp.py`): bitwise the plain forward, never under autograd."""

import pytest
import torch

from ovis_lit.constants import IMAGE_ATOM_ID, INDICATOR_IDS
from ovis_lit.model import inplace_mlp

from .tiny import tiny_model


@pytest.mark.parametrize("llm,backbone,classes", [
    ("qwen2", "aimv2_vision_model", {"Aimv2MLP", "Qwen2MLP"}),
    ("llama", "siglip_vision_model", {"LlamaMLP"}),  # SigLIP's GELU MLP is not SwiGLU: left alone
    ("gemma2", "siglip_vision_model", set()),  # Gemma 2's MLP uses tanh-GELU: left alone
])
def test_inplace_mlps_are_bitwise_the_plain_forward(llm, backbone, classes):
    torch.manual_seed(0)
    model = tiny_model(llm=llm, backbone=backbone).eval()
    mlps = [m for m in model.modules() if inplace_mlp.is_inplace_capable(m)]
    assert {type(m).__name__ for m in mlps} == classes
    for m in mlps:
        width = m.gate_proj.in_features
        x = torch.randn(3, 5, width)
        with torch.no_grad():
            want = m(x)
            with inplace_mlp.inplace_mlps(model) as n:
                got = m(x)
        assert n == len(mlps) and torch.equal(got, want)
        assert "forward" not in vars(m)  # the class's forward again


def test_inplace_mlps_leave_autograd_alone():
    torch.manual_seed(0)
    model = tiny_model(llm="qwen2", backbone="aimv2_vision_model")
    mlp = next(m for m in model.modules() if inplace_mlp.is_inplace_capable(m))
    x = torch.randn(2, mlp.gate_proj.in_features, requires_grad=True)
    want = torch.autograd.grad(mlp(x).sum(), x)[0]
    with inplace_mlp.inplace_mlps(model):
        got = torch.autograd.grad(mlp(x).sum(), x)[0]  # would raise if computed in place
    assert torch.equal(got, want)


def test_generate_runs_the_mlps_in_place_and_answers_alike(monkeypatch):
    torch.manual_seed(0)
    model = tiny_model(llm="qwen2", backbone="aimv2_vision_model").eval()
    used = []
    forward = inplace_mlp._inplace_forward
    monkeypatch.setattr(inplace_mlp, "_inplace_forward", lambda m: used.append(type(m).__name__) or forward(m))
    side = model.visual_tokenizer.backbone.config.image_size
    per_crop = model.visual_tokenizer.tokens_per_crop()
    ids = torch.tensor([[5, 6, INDICATOR_IDS[0]] + [IMAGE_ATOM_ID] * per_crop + [INDICATOR_IDS[-1], 7, 8]])
    pixels = torch.randn(1, 3, side, side)
    args = dict(max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0)
    model.inplace_mlps = False
    want = model.generate(ids, torch.ones_like(ids), pixels, **args)
    assert not used
    model.inplace_mlps = True
    got = model.generate(ids, torch.ones_like(ids), pixels, **args)
    assert set(used) == {"Aimv2MLP", "Qwen2MLP"} and torch.equal(got, want)
