"""Preference training (stage=dpo): the loss equals trl's, sequence log-probs are the SFT loss's terms, the
converter keeps good pairs and counts bad ones, and DPO on the shapes pairs raises the chosen-minus-rejected margin
with the reference model unchanged bit for bit."""

import io
import json
from collections import Counter, defaultdict
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from PIL import Image

from ovis_lit.constants import IGNORE_ID
from ovis_lit.data.convert import preference as preference_converter
from ovis_lit.data.convert.checks import Limits
from ovis_lit.data.convert.runner import Options
from ovis_lit.data.preference import PairCollate, PreferenceBuilder, last_turn_labels
from ovis_lit.data.samples import SampleBuilder
from ovis_lit.data.shapes import ensure_shapes_dataset
from ovis_lit.data.stream import read_shards
from ovis_lit.model.sequence_logprobs import batch_sequence_logps
from ovis_lit.training.dpo import adapters_disabled
from ovis_lit.training.dpo_loss import dpo_loss
from ovis_lit.training.run import build_processor, build_stage

from .helpers import SMALL_DATA, compose_train
from .tiny import tiny_model

# a smaller ovis_tiny (the same tokenizer and image size): a DPO step in well under a second on a busy CPU
SMALL_MODEL = ["model.spec.backbone.config.hidden_size=32", "model.spec.backbone.config.intermediate_size=64",
               "model.spec.backbone.config.num_hidden_layers=1", "model.spec.backbone.config.num_attention_heads=2",
               "model.spec.llm.config.hidden_size=32", "model.spec.llm.config.intermediate_size=64",
               "model.spec.llm.config.num_hidden_layers=2", "model.spec.visual_vocab_size=64"]


@pytest.fixture
def one_thread():
    """Training steps of the small model take ~0.1 s on one thread, over 1 s on two threads of a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(shapes_data):
    # conftest's session data plus the preference pairs (their own stamp)
    ensure_shapes_dataset(shapes_data / "shapes", scale=SMALL_DATA, preference=True)
    return shapes_data


# --------------------------------------------------------------------------------------------------- the loss


def _trl_loss(loss_type, beta, label_smoothing, policy, reference, completion_mask):
    """trl 1.16's DPOTrainer._compute_loss run on given per-token log-probs (its loss is inline in that method)."""
    from trl.trainer.dpo_trainer import DPOTrainer

    n, length = completion_mask.shape
    outputs = SimpleNamespace(log_probs=policy * completion_mask[:, 1:], entropy=torch.zeros(n, length - 1),
                              mean_logits=torch.zeros(n, length - 1),
                              is_top1=torch.zeros(n, length - 1, dtype=torch.bool))
    pairs = n // 2
    metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=label_smoothing, use_weighting=False,
        _metrics=metrics, _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(n, length, dtype=torch.long), "attention_mask": torch.ones(n, length),
              "completion_mask": completion_mask, "ref_chosen_logps": reference[:pairs],
              "ref_rejected_logps": reference[pairs:]}
    loss = DPOTrainer._compute_loss(trainer, lambda **kw: outputs, inputs, False)
    return loss, metrics["train"]


@pytest.mark.parametrize("loss_type,label_smoothing", [("sigmoid", 0.0), ("robust", 0.2), ("hinge", 0.0),
                                                       ("ipo", 0.0)])
def test_the_loss_equals_trls(loss_type, label_smoothing):
    pairs, length, beta = 6, 9, 0.3
    generator = torch.Generator().manual_seed(1)
    completion_mask = torch.zeros(2 * pairs, length, dtype=torch.long)
    for row in range(2 * pairs):  # answers of different lengths after a prompt
        completion_mask[row, 3 + row % 4:] = 1
    token_logps = -torch.rand(2 * pairs, length - 1, generator=generator, dtype=torch.float64) * 3
    reference = -torch.rand(2 * pairs, generator=generator, dtype=torch.float64) * 10
    expected, metrics = _trl_loss(loss_type, beta, label_smoothing, token_logps, reference, completion_mask)

    sums = (token_logps * completion_mask[:, 1:]).sum(1)
    tokens = completion_mask[:, 1:].sum(1)
    terms = dpo_loss(sums[:pairs], sums[pairs:], reference[:pairs], reference[pairs:], beta, loss_type,
                     label_smoothing, tokens[:pairs], tokens[pairs:])
    torch.testing.assert_close(terms.loss, expected, rtol=1e-12, atol=1e-12)
    ours = terms.metrics("train")
    for name, trl_name in [("rewards_chosen", "rewards/chosen"), ("rewards_rejected", "rewards/rejected"),
                           ("rewards_margin", "rewards/margins"), ("rewards_accuracy", "rewards/accuracies")]:
        assert float(ours[f"train/{name}"]) == pytest.approx(metrics[trl_name][0], abs=1e-12), name


def test_bad_loss_settings_are_refused():
    x = torch.zeros(2)
    for kwargs in ({"loss_type": "kto"}, {"beta": 0.0}, {"loss_type": "sigmoid", "label_smoothing": 0.1},
                   {"loss_type": "ipo"}):
        with pytest.raises(ValueError):
            dpo_loss(x, x, x, x, **kwargs)


# -------------------------------------------------------------------------------------------- log-probs


@pytest.mark.parametrize("llm", ["qwen2", "gemma2"])
def test_sequence_logps_are_the_sft_losss_terms(llm):
    """-sum / count of one sequence is the SFT loss (both model paths); padding changes nothing."""
    model = tiny_model(llm=llm).eval()
    ids = torch.randint(0, 300, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # the second sequence is shorter (right-padded)
    labels = ids.masked_fill(torch.arange(12) < 5, IGNORE_ID).masked_fill(mask == 0, IGNORE_ID)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": None}
    with torch.no_grad():
        sums, counts = batch_sequence_logps(model, batch)
        assert counts.tolist() == [7, 3]  # labels at 5..11 and 5..7
        for row in range(2):
            n = int(mask[row].sum())
            one = slice(row, row + 1)
            for fast in (True, False):
                model.fast_path = fast
                loss = model(ids[one, :n], mask[one, :n], labels[one, :n]).loss
                torch.testing.assert_close(-sums[row] / counts[row], loss, rtol=1e-5, atol=1e-6)


def test_only_the_last_answer_is_labelled():
    assert last_turn_labels([IGNORE_ID, 5, 6, IGNORE_ID, IGNORE_ID, 7, 8, IGNORE_ID]) == \
        [IGNORE_ID, IGNORE_ID, IGNORE_ID, IGNORE_ID, IGNORE_ID, 7, 8, IGNORE_ID]
    assert last_turn_labels([IGNORE_ID, IGNORE_ID]) == [IGNORE_ID, IGNORE_ID]


# -------------------------------------------------------------------------------------------- the converter


def _png(colour, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_converter_keeps_good_pairs_counts_bad_ones_and_training_reads_them(tmp_path, data_dir):
    images = tmp_path / "images"
    images.mkdir()
    (images / "red.png").write_bytes(_png("red"))
    (images / "blue.png").write_bytes(_png("blue"))
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = [
        # RLAIF-V layout: a question without <image>, its index as `idx`
        {"idx": "r1", "image": "red.png", "question": "What colour is the image?", "chosen": "Red.",
         "rejected": "Blue."},
        # LLaVA style, two turns before the answer, answers as turns, reference log-probs
        {"id": "l1", "images": ["red.png", "blue.png"],
         "conversations": [{"from": "human", "value": "<image>\n<image>\nName the first colour."},
                           {"from": "gpt", "value": "Red."}, {"from": "human", "value": "And the second?"}],
         "chosen": {"from": "gpt", "value": "Blue."}, "rejected": [{"role": "assistant", "content": "Green."}],
         "ref_chosen_logp": -3.5, "ref_rejected_logp": -7.25},
        {"id": "t1", "question": "Say yes.", "chosen": "yes", "rejected": "no"},  # text only
    ]
    bad = {
        "no_rejected": ({"id": "b1", "image": "red.png", "question": "Colour?", "chosen": "Red."}, "empty_answer"),
        "blank": ({"id": "b2", "question": "Q?", "chosen": "  ", "rejected": "x"}, "empty_answer"),
        "same": ({"id": "b3", "question": "Q?", "chosen": "Red.", "rejected": " Red. "}, "identical_answers"),
        "missing_image": ({"id": "b4", "image": "gone.png", "question": "Q?", "chosen": "a", "rejected": "b"},
                          "missing_image"),
        "outside": ({"id": "b5", "image": "../red.png", "question": "Q?", "chosen": "a", "rejected": "b"},
                    "bad_image_path"),
        "undecodable": ({"id": "b6", "image": "broken.png", "question": "Q?", "chosen": "a", "rejected": "b"},
                        "decode_error"),
        "ends_with_answer": ({"id": "b7", "conversations": [{"from": "human", "value": "Q?"},
                                                            {"from": "gpt", "value": "A."}],
                              "chosen": "a", "rejected": "b"}, "invalid_sample"),
        "image_in_answer": ({"id": "b8", "question": "Q?", "chosen": "<image>", "rejected": "b"}, "invalid_sample"),
        "marks_mismatch": ({"id": "b9", "image": "red.png", "conversations": [{"from": "human", "value": "Q?"}],
                            "chosen": "a", "rejected": "b"}, "invalid_sample"),
        "bad_ref": ({"id": "b10", "question": "Q?", "chosen": "a", "rejected": "b", "ref_chosen_logp": "x",
                     "ref_rejected_logp": 1.0}, "bad_json"),
        "no_prompt": ({"id": "b11", "chosen": "a", "rejected": "b"}, "bad_json"),
    }
    lines = [json.dumps(r) for r in good + [r for r, _ in bad.values()]] + ["[1, 2", "17"]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    report = preference_converter.convert([tmp_path / "pairs.jsonl"], images,
                                          Options(tmp_path / "out", "pairs", workers=1, progress=False), Limits())
    expected = defaultdict(int)
    for _, reason in bad.values():
        expected[reason] += 1
    expected["bad_json"] += 2  # the unparsable line and the record that is no object
    assert report["written"]["train"] == len(good)
    assert report["rejected"] == dict(expected)

    # training reads every converted pair (nothing skipped) into two sequences of one batch
    cfg = compose_train(["stage=dpo"], tmp_path / "run", data_dir)
    processor = build_processor(cfg)
    builder = PreferenceBuilder(SampleBuilder(processor, max_length=256))
    pairs = [builder(record) for record in read_shards(report["shards"]["train"], Counter())]
    assert [p.meta["key"].split("-")[0] for p in pairs] == ["pairs"] * 3
    by_id = {p.chosen.meta["key"]: p for p in pairs}
    assert len(by_id) == 3
    tok = processor.tokenizer
    answers = []
    for pair in pairs:
        for sample in (pair.chosen, pair.rejected):
            answers.append(tok.decode([t for t in sample.labels if t != IGNORE_ID]).split("<|im_end|>")[0])
    assert sorted(answers) == sorted(["Red.", "Blue.", "Blue.", "Green.", "yes", "no"])  # the final answers only
    assert sorted(p.ref_logps for p in pairs if p.ref_logps) == [(-3.5, -7.25)]
    batch = PairCollate(processor.collate)(pairs)
    assert batch["pairs"] == 3 and batch["input_ids"].shape[0] == 6 and "ref_logps" not in batch  # not all have one
    with_ref = [p for p in pairs if p.ref_logps]
    assert PairCollate(processor.collate)(with_ref)["ref_logps"].tolist() == [-3.5, -7.25]
    # a stage reading precomputed log-probs skips the pairs without them, counted
    strict = PreferenceBuilder(SampleBuilder(processor, max_length=256), reference_logps=True)
    reasons = []
    for record in read_shards(report["shards"]["train"], Counter()):
        try:
            strict(record)
        except ValueError as exn:
            reasons.append(exn.reason)
    assert reasons == ["missing_reference_logps"] * 2


def test_converter_reads_the_rlaif_v_parquet_layout(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{"ds_name": "x", "image": {"bytes": _png("red"), "path": "a.png"}, "question": "Colour?",
             "chosen": "Red.", "rejected": "Blue.", "origin_dataset": "d", "origin_split": "{}", "idx": "7",
             "image_path": "a.png"},
            {"ds_name": "x", "image": {"bytes": b"junk", "path": "b.png"}, "question": "Colour?",
             "chosen": "Red.", "rejected": "Blue.", "origin_dataset": "d", "origin_split": "{}", "idx": "8",
             "image_path": "b.png"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rlaif.parquet")
    report = preference_converter.main(["--input", str(tmp_path / "rlaif.parquet"), "--output", str(tmp_path / "o"),
                                        "--workers", "1", "--no-progress"])
    assert report["written"]["train"] == 1 and report["rejected"] == {"decode_error": 1}
    record = next(iter(read_shards(report["shards"]["train"], Counter())))
    meta = json.loads(record["json"])
    assert meta["id"] == "7" and meta["prompt"] == [{"from": "human", "value": "<image>\nColour?"}]
    assert meta["images"] == ["0.png"] and record["0.png"] == _png("red")


# ------------------------------------------------------------------------------------------------- training


def _margins(module, batch):
    module.eval()
    with torch.no_grad():
        terms = module.dpo_terms(batch)
    module.train()
    return terms.chosen_rewards - terms.rejected_rewards


def test_dpo_raises_the_margin_and_leaves_the_reference_bitwise(tmp_path, data_dir, one_thread):
    cfg = compose_train(["stage=dpo", "recipe.dpo.lr=3e-3", "recipe.dpo.batch_size=4", "stage.warmup_ratio=0",
                         *SMALL_MODEL], tmp_path, data_dir)
    built = build_stage(cfg)
    module, datamodule = built.module, built.datamodule
    module.configure_model()
    reference = module.reference
    assert reference is not None and not reference.training
    assert not any(p.requires_grad for p in reference.parameters())
    assert not any(k.startswith(("reference", "_reference")) for k in module.state_dict())  # not saved or exported
    frozen = {k: v.clone() for k, v in reference.state_dict().items()}
    datamodule.prepare_data()
    batch = next(iter(datamodule.train_dataloader()))  # the pairs of the first step
    assert batch["pairs"] == 4 and batch["input_ids"].shape[0] == 8
    assert torch.equal(_margins(module, batch), torch.zeros(4))  # the policy is its reference: margins exactly 0
    logged = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})

    L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              limit_val_batches=0, enable_model_summary=False, callbacks=[Record()]).fit(module, datamodule=datamodule)
    after = _margins(module, batch)
    assert after.mean() > 0.05, after  # the chosen answers gained on the rejected ones
    assert set(logged[-1]) >= {"train/loss", "train/rewards_chosen", "train/rewards_rejected", "train/rewards_margin",
                               "train/rewards_accuracy"}
    assert module.reference is reference and not reference.training  # Lightning's train() never reached it
    for name, value in reference.state_dict().items():
        assert torch.equal(value, frozen[name]), f"the reference's {name} changed"
    assert datamodule.consumed == 6 * 4  # pairs, not sequences


def test_precomputed_reference_reads_the_batch(tmp_path, data_dir):
    cfg = compose_train(["stage=dpo", "stage.dpo.reference=precomputed", *SMALL_MODEL], tmp_path, data_dir)
    built = build_stage(cfg)
    assert built.datamodule.reference_logps and built.datamodule.pairs
    module = built.module
    module.configure_model()
    assert module.reference is None  # no second model
    batch = {"ref_logps": torch.tensor([-1.0, -2.0])}
    assert module.reference_logps(batch).tolist() == [-1.0, -2.0]
    with pytest.raises(ValueError, match="no ref_logps"):
        module.reference_logps({})


def test_adapters_off_reference_is_the_base_model():
    """With LoRA adapters (peft), reference=adapters_off scores with the adapters disabled: the base model."""
    peft = pytest.importorskip("peft")
    model = tiny_model().eval()
    ids = torch.randint(0, 300, (2, 10))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": ids.masked_fill(torch.arange(10) < 4, IGNORE_ID), "pixel_values": None}
    with torch.no_grad():
        base = batch_sequence_logps(model, batch)[0]
    with pytest.raises(ValueError, match="needs LoRA adapters"), adapters_disabled(model):
        pass
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.inject_adapter_in_model(config, model.llm)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)
    with torch.no_grad():
        adapted = batch_sequence_logps(model, batch)[0]
        assert not torch.allclose(adapted, base)
        with adapters_disabled(model):
            torch.testing.assert_close(batch_sequence_logps(model, batch)[0], base)
        torch.testing.assert_close(batch_sequence_logps(model, batch)[0], adapted)  # adapters back on
    assert all(p.requires_grad for p in lora)


def test_precomputed_reference_logps_are_what_the_copy_computes(tmp_path, data_dir, one_thread):
    """scripts/precompute_reference_logps.py's pass writes, for each pair, the log-probs the frozen copy gives it in
    training; a DPO stage reading them (reference=precomputed) gets them in its batches."""
    from ovis_lit.training.reference_logps import precompute

    cfg = compose_train(["stage=dpo", "recipe.dpo.batch_size=2", *SMALL_MODEL], tmp_path, data_dir)
    built = build_stage(cfg)
    built.module.configure_model()
    reference = built.module.reference
    report = precompute(cfg, tmp_path / "ref", ("val",), pairs_per_batch=2, model=reference)
    assert report["written"] > 0 and report["copied"] == {}
    val = report["sources"]["preference"]["val"]
    pre = compose_train(["stage=dpo", "stage.dpo.reference=precomputed", "recipe.dpo.batch_size=2", *SMALL_MODEL,
                         f"data.sources.preference.val={val}"], tmp_path, data_dir)
    datamodule = build_stage(pre).datamodule
    batches = list(datamodule.val_dataloader())
    assert sum(b["pairs"] for b in batches) == report["written"]
    for batch in batches:
        with torch.no_grad():
            copy_logps = batch_sequence_logps(reference, batch)[0]
        torch.testing.assert_close(batch["ref_logps"], copy_logps, rtol=1e-5, atol=1e-4)


@pytest.mark.slow  # three short fits: 4-20 s, with the load of a shared 2-core machine
def test_a_resumed_dpo_run_continues_exactly(tmp_path, data_dir, one_thread):
    """Stopped after step 2 and resumed from its checkpoint: the same pairs and losses as the straight run (the
    reference is rebuilt as the stage starts, the same model the interrupted run compared with)."""
    cfg = compose_train(["stage=dpo", "recipe.dpo.lr=3e-3", "recipe.dpo.batch_size=2", "stage.warmup_ratio=0",
                         *SMALL_MODEL], tmp_path, data_dir)

    class Record(L.Callback):
        def __init__(self, save_at=None):
            self.steps, self.save_at = [], save_at

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.steps.append((trainer.global_step, float(outputs["loss"]), batch["keys"]))
            if trainer.global_step == self.save_at:  # the run is interrupted here
                trainer.save_checkpoint(tmp_path / "step2.ckpt")
                trainer.should_stop = True

    def fit(record, steps, ckpt_path=None):
        L.seed_everything(cfg.seed)  # as run_stage does: the model (and so the reference) is built the same
        built = build_stage(cfg)
        L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, limit_val_batches=0, enable_model_summary=False,
                  callbacks=[record]).fit(built.module, datamodule=built.datamodule, ckpt_path=ckpt_path,
                                          weights_only=True)

    straight, first, resumed = Record(), Record(save_at=2), Record()
    fit(straight, 4)
    fit(first, 4)  # the same run (its LR schedule spans 4 steps), stopped after step 2
    fit(resumed, 4, tmp_path / "step2.ckpt")
    assert [s[0] for s in resumed.steps] == [3, 4]
    assert first.steps + resumed.steps == straight.steps
