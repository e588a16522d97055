"""The Ovis2.5 model configs: released shapes on the meta device, and the tiny CPU model end to end."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from ovis_lit.model.build import build_ovis
from ovis_lit.training.run import build_processor

from .conftest import REPO


def _cfg(name: str, tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"model={name}", f"paths.output_dir={tmp_path}"])


# Released shapes: SigLIP2-so400m NaViT (0.414 B without a pooling head) + visual head (1152*4 x 65532) +
# table (65536 x d) + Qwen3-1.7B (1.72 B, tied) / Qwen3-8B (8.19 B, untied).
@pytest.mark.parametrize("name,billions,llm_billions", [("ovis25_2b", 2.570, 1.721), ("ovis25_9b", 9.175, 8.191)])
def test_released_shapes_have_the_released_parameter_counts(name, billions, llm_billions, tmp_path):
    cfg = _cfg(name, tmp_path)
    model = build_ovis(OmegaConf.to_container(cfg.model.spec, resolve=True), device="meta")
    count = lambda module: sum(p.numel() for p in module.parameters()) / 1e9  # noqa: E731
    print(f"{name}: {count(model):.3f} B parameters (ViT {count(model.visual_tokenizer.backbone):.3f} B, "
          f"LLM {count(model.llm):.3f} B)")
    assert count(model) == pytest.approx(billions, rel=0.002)
    assert count(model.llm) == pytest.approx(llm_billions, rel=0.002)
    assert count(model.visual_tokenizer.backbone) == pytest.approx(0.4135, rel=0.002)
    assert model.visual_tokenizer.native_resolution and model.n_indicators == 4


def test_tiny_model_trains_and_generates_on_mixed_sizes(tmp_path):
    cfg = _cfg("ovis25_tiny", tmp_path)
    model = build_ovis(OmegaConf.to_container(cfg.model.spec, resolve=True))
    processor = build_processor(cfg)
    images = [Image.new("RGB", (w, h), (40 * i, 90, 200)) for i, (w, h) in enumerate([(64, 32), (20, 50), (33, 33)])]
    samples = [
        processor.conversation([{"from": "human", "value": "<image>\nWhat shape?"}, {"from": "gpt", "value": "a circle"}],
                               images[:1]),
        processor.conversation([{"from": "human", "value": "<image>\n<image>\nSame?"}, {"from": "gpt", "value": "no"}],
                               images[1:]),
        processor.conversation([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "<think>\nhm\n</think>\n\nhello"}]),
    ]
    batch = processor.collate(samples)
    assert batch["grid_thws"].shape == (3, 3) and len({tuple(g) for g in batch["grid_thws"].tolist()}) == 3
    model.train()
    out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixel_values"],
                grid_thws=batch["grid_thws"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    vit_grads = [p.grad for n, p in model.visual_tokenizer.backbone.named_parameters() if not n.startswith("post_layernorm")]
    assert all(g is not None and torch.isfinite(g).all() for g in vit_grads)
    model.eval()
    query = processor.collate([processor.query("What shape?", images[:1]), processor.query("Hi")], padding_side="left")
    new = model.generate(query["input_ids"], query["attention_mask"], query["pixel_values"], query["grid_thws"],
                         max_new_tokens=3, do_sample=False)
    assert new.shape[0] == 2


def test_text_only_training_batch_keeps_the_vit_in_the_graph(tmp_path):
    cfg = _cfg("ovis25_tiny", tmp_path)
    model = build_ovis(OmegaConf.to_container(cfg.model.spec, resolve=True)).train()
    processor = build_processor(cfg)
    batch = processor.collate([processor.conversation([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "yo"}])])
    out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], None)
    out.loss.backward()
    assert model.visual_tokenizer.backbone.embeddings.patch_embedding.weight.grad is not None


def test_truncation_keeps_whole_images_and_their_patches(tmp_path):
    from ovis_lit.processing.native_processor import fit_native_length

    processor = build_processor(_cfg("ovis25_tiny", tmp_path))
    images = [Image.new("RGB", (64, 32)), Image.new("RGB", (32, 32))]  # 8 and 4 visual tokens
    sample = processor.conversation(
        [{"from": "human", "value": "<image>\n<image>\nSame?"}, {"from": "gpt", "value": "no"}], images)
    second_start = [i for i, t in enumerate(sample.input_ids) if t == -301][1]
    cut = fit_native_length(sample, second_start + 3)  # ends inside the second image: it goes whole
    assert cut.input_ids == sample.input_ids[:second_start] and cut.grid_thws.tolist() == [[1, 4, 8]]
    assert torch.equal(cut.pixel_values, sample.pixel_values[:32]) and cut.meta["truncated"]
    assert fit_native_length(sample, len(sample.input_ids)) is sample


def test_caption_sample_supervises_only_the_caption(tmp_path):
    processor = build_processor(_cfg("ovis25_tiny", tmp_path))
    sample = processor.caption("a red square", Image.new("RGB", (32, 32)))
    assert sample.input_ids[0] == -301 and sample.input_ids.count(-300) == 4
    assert processor.tokenizer.decode([t for t in sample.labels if t >= 0]) == "a red square"


def test_load_original_hands_an_ovis25_layout_over():
    from ovis_lit.interop.original import load_original

    from .test_ovis25 import FIXTURE25

    model, processor = load_original(FIXTURE25 / "checkpoint")
    assert model.visual_tokenizer.native_resolution and processor.chat_format == "qwen3"


@pytest.mark.slow
def test_train_py_runs_ovis25_tiny(tmp_path, shapes_data):
    """`python train.py model=ovis25_tiny`: the data stream, the Lightning module and the export at the end."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "train.py", "model=ovis25_tiny", "stage=s3", "recipe.s3.max_steps=2",
         "recipe.s3.batch_size=4", "logger=csv", f"paths.output_dir={tmp_path}", f"paths.data_dir={shapes_data}",
         "+data.prepare.scale=0.03", "data.num_workers=0", "evaluate=false"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["vit_config"]["model_type"] == "siglip2_navit" and config["visual_vocab_size"] == 512
