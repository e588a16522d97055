"""The Gumbel temperature of a gumbel_argmax visual tokenizer is annealed 5.0 -> 0.05 over the stage."""

from types import SimpleNamespace

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ovis_lit.training.tau import TauAnnealing

from .conftest import REPO


def _module(function: str):
    tokenizer = SimpleNamespace(tokenize_function=function, tau=1.0)
    return SimpleNamespace(model=SimpleNamespace(visual_tokenizer=tokenizer)), tokenizer


@pytest.mark.parametrize("step, tau", [(0, 5.0), (50, 2.525), (100, 0.05), (120, 0.05)])
def test_tau_falls_linearly_over_max_steps(step, tau):
    module, tokenizer = _module("gumbel_argmax")
    TauAnnealing().on_train_batch_start(SimpleNamespace(global_step=step, max_steps=100), module, None, 0)
    assert tokenizer.tau == pytest.approx(tau)


def test_other_tokenize_functions_keep_their_tau():
    module, tokenizer = _module("softmax")
    TauAnnealing().on_train_batch_start(SimpleNamespace(global_step=10, max_steps=100), module, None, 0)
    assert tokenizer.tau == 1.0


def test_the_default_callbacks_anneal_from_5_to_0_05():
    callbacks = OmegaConf.load(REPO / "conf" / "callbacks" / "default.yaml")
    tau = instantiate(callbacks.tau)
    assert isinstance(tau, TauAnnealing) and (tau.start, tau.end) == (5.0, 0.05)
