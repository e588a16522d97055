"""experiments/connectors.py: the LR choice, the table, and the whole pipeline in its smoke sizes."""

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():
    # imported by its module name (not from its file path) so that the run processes of --jobs > 1, which are
    # spawned and unpickle train_run and the plan by name, can import it too (they inherit sys.path)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("experiments.connectors")


def test_the_lr_is_chosen_on_validation_accuracy_then_loss():
    choose = _script().choose_lr
    assert choose([{"lr": 1e-4, "val_accuracy": 0.5, "val_loss": 1.0},
                   {"lr": 1e-3, "val_accuracy": 0.7, "val_loss": 2.0}]) == 1e-3
    assert choose([{"lr": 1e-4, "val_accuracy": 0.7, "val_loss": 1.0},
                   {"lr": 1e-3, "val_accuracy": 0.7, "val_loss": 2.0}]) == 1e-4
    assert choose([{"lr": 1e-4, "val_accuracy": None, "val_loss": 1.0},
                   {"lr": 1e-3, "val_accuracy": 0.3, "val_loss": 2.0}]) == 1e-3


def test_summary_is_mean_and_sample_std_over_seeds():
    c = _script()
    runs = [{"seed": s, "curve": [{"step": 1, "accuracy": acc}], "connector_parameters": 10, "total_parameters": 99,
             "train_seconds": 10.0 + s, "val_accuracy": acc,
             "test": {"heldout": {"accuracy": acc, "blank_image_accuracy": 0.25, "n": 4}}}
            for s, acc in enumerate([0.5, 0.7, 0.9])]
    plan = c.parse_args(["--smoke", "--out", "/nonexistent"])
    out = c.summarise(plan, {"mlp": {"lr": 1e-3, "sweep": [], "runs": runs}}, 60.0)
    heldout = out["arms"]["mlp"]["test"]["heldout"]
    assert heldout["accuracy"]["mean"] == pytest.approx(0.7) and heldout["accuracy"]["std"] == pytest.approx(0.2)
    assert heldout["blank_image_accuracy"]["std"] == 0.0 and out["arms"]["mlp"]["connector_parameters"] == 10


@pytest.mark.slow
def test_smoke_experiment_writes_table_and_plot(tmp_path, shapes_data):
    c = _script()
    out = tmp_path / "exp"
    # as the CPU experiment runs by default: the pool of run processes, a full-length sweep of two rates on seed 0
    # whose chosen run is kept as seed 0, then seed 1 at that rate: six runs, every split scored
    c.main(["--smoke", "--arms", "mlp,ovis", "--seeds", "2", "--lrs", "1e-3,2e-3", "--sweep-fraction", "1",
            "--s1-steps", "1", "--s3-steps", "2", "--logger", "csv", "--out", str(out),
            "--data-dir", str(shapes_data), "--jobs", "2"])
    results = json.loads((out / "results.json").read_text())
    assert set(results["arms"]) == {"ovis", "mlp"}
    for name, arm in results["arms"].items():
        assert [s["lr"] for s in arm["sweep"]] == [1e-3, 2e-3] and arm["lr"] in (1e-3, 2e-3)
        assert arm["seeds"] == [0, 1]
        kept = json.loads((out / "runs" / name / f"seed0-lr{arm['lr']:g}" / "result.json").read_text())
        assert kept["seed"] == 0 and kept["lr"] == arm["lr"] and kept["curve"] == arm["curves"][0]
        assert json.loads((out / "runs" / name / "seed1" / "result.json").read_text())["lr"] == arm["lr"]
        # the test splits of data=shapes_vision: shapes, hard shapes, digits (the smoke data: 12 questions each)
        assert set(arm["test"]) == {"heldout", "heldout_shapes_hard", "heldout_digits"}
        assert arm["connector_parameters"] > 0 and arm["train_seconds"]["n"] == 2
        heldout = arm["test"]["heldout"]
        assert heldout["n"] > 0 and heldout["blank_image_accuracy"]["n"] == 2
        steps = [p["step"] for p in arm["curves"][0]]
        assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 3  # stage 1, then stage 3
    table = (out / "results.md").read_text()
    assert "| ovis |" in table and "| mlp |" in table and "heldout blank %" in table
    assert (out / "accuracy_vs_step.png").stat().st_size > 1000
    # the MLP arm's stage export is in ovis-lit's layout, the Ovis arm's in the original one
    assert (out / "runs" / "mlp" / "seed1" / "s3" / "export" / "ovis_lit_model.json").is_file()
    assert (out / "runs" / "ovis" / "seed1" / "s3" / "export" / "config.json").is_file()
