#!/usr/bin/env python
"""Load an ovis-lit export with the ORIGINAL Ovis code and compare what it computes with a reference fixture.

A developer check, not a CI test: it needs a checkout of the original repository (GitHub AIDC-AI/Ovis) and a venv
with the transformers version of that generation. It never imports ovis_lit (it runs in the original's venv) and it
never edits the original's files: what the original needs and this machine lacks is stubbed here (deepspeed,
which the original imports but does not use for a single-process run; flash-attn, by the CPU stand-in in
shared/reference/flash_attn_cpu/ for Ovis2.5).

Setup (once; outside the repository):
    git archive <branch> of the original into /work/orig/<branch> for branch v1.6, v2.0 (Ovis 1.6, Ovis2) and main
    (Ovis2.5)
    python3 -m venv /work/venv-ovis-v2   && /work/venv-ovis-v2/bin/pip install torch==2.13.0 transformers==4.46.2 \
        safetensors pillow numpy packaging
    python3 -m venv /work/venv-ovis-main && /work/venv-ovis-main/bin/pip install torch==2.13.0 transformers==4.51.3 \
        safetensors pillow numpy packaging

Export with ovis-lit (in ovis-lit's venv), e.g. a fixture's checkpoint imported then exported:
    python -c "from ovis_lit.interop.original import load_original; from ovis_lit.interop.original_export import export_original; \
        m, p = load_original('tests/fixtures/ovis2-reference-tiny/checkpoint'); \
        export_original(m, p, '/tmp/export-ovis2', multimodal_max_length=512)"
(`m.original_config = None` before the export makes ovis-lit write every config field itself, as for a model it
built; Ovis2.5 checkpoints go through the same two functions.)

Run the original on the export (in the original's venv):
    /work/venv-ovis-v2/bin/python scripts/check_in_original.py --original /work/orig/v2.0 \
        --export /tmp/export-ovis2 --fixture tests/fixtures/ovis2-reference-tiny
    /work/venv-ovis-v2/bin/python scripts/check_in_original.py --original /work/orig/v1.6 \
        --export /tmp/export-ovis16 --fixture tests/fixtures/ovis16-reference-tiny
    PYTHONPATH=../shared/reference/flash_attn_cpu /work/venv-ovis-main/bin/python scripts/check_in_original.py \
        --original /work/orig/main --export /tmp/export-ovis25 --fixture tests/fixtures/ovis25-reference-tiny
Without --fixture (a model with no reference, e.g. a fresh CLIP-based 1.6 model) it only checks that the original
loads the export with every weight, preprocesses the images of --images, runs a training forward/backward and
generates a few tokens. For numbers on such a model (1.6 / Ovis2 generations), let the original write a reference
on a fixture's inputs, then run ovis-lit's parity checks on it (in ovis-lit's venv):
    /work/venv-ovis-v2/bin/python scripts/check_in_original.py --original /work/orig/v1.6 \
        --export /tmp/export-clip --fixture tests/fixtures/ovis16-reference-tiny --write-reference /tmp/ref-clip
    PYTHONPATH=$PWD python scripts/parity_on_reference.py /tmp/ref-clip

It prints one line per comparison (max abs difference, or equal / differ) and exits 1 when one is over its
tolerance (those of issue 13: pixels 1e-5, visual tokens 1e-6, logits, loss and gradients 1e-5, ids, labels,
prompts and greedy tokens identical) or the original refused the export.
"""

from __future__ import annotations

import argparse
import copy
import importlib.machinery
import json
import sys
import traceback
import types
from pathlib import Path

TOL = {
    "pixels": 1e-5,
    "embeds": 1e-5,
    "visual_tokens": 1e-6,
    "logits": 1e-5,
    "loss": 1e-5,
    "grads": 1e-5,
    "weights": 0.0,
}


class Report:
    def __init__(self):
        self.failed = []

    def diff(self, name, kind, value):
        ok = value <= TOL[kind]
        print(f"  {'ok  ' if ok else 'FAIL'} {name:58s} max|diff| {value:.3g}")
        if not ok:
            self.failed.append(name)

    def same(self, name, a, b):
        ok = a == b
        print(f"  {'ok  ' if ok else 'FAIL'} {name:58s} {'equal' if ok else 'differ'}")
        if not ok:
            print(f"       got      {a}\n       expected {b}")
            self.failed.append(name)

    def fail(self, name, message):
        print(f"  FAIL {name}: {message}")
        self.failed.append(name)


def _stub_deepspeed():
    """The original imports deepspeed at module level; a single process never calls it (zero3 is off)."""
    if "deepspeed" in sys.modules:
        return
    try:
        import deepspeed  # noqa: F401

        return
    except ImportError:
        pass
    stub = types.ModuleType("deepspeed")
    stub.__spec__ = importlib.machinery.ModuleSpec("deepspeed", None)
    stub.zero = types.SimpleNamespace()
    stub.comm = types.SimpleNamespace()
    sys.modules["deepspeed"] = stub


def import_original(original: Path):
    import transformers  # noqa: F401  (imported before the stub so that it sees deepspeed as not installed)

    _stub_deepspeed()
    sys.path.insert(0, str(original.resolve()))
    from ovis.model import modeling_ovis

    if not Path(modeling_ovis.__file__).resolve().is_relative_to(original.resolve()):
        raise SystemExit(f"imported {modeling_ovis.__file__}, not the original under {original}")
    return modeling_ovis


def max_abs(a, b, mask=None):
    import torch

    a, b = a.detach().float(), b.detach().float()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    d = (a - b).abs()
    if mask is not None:
        d = d[mask.bool()]
    return float(d.max()) if d.numel() else 0.0 if torch.isfinite(d).all() else float("inf")


# ----------------------------------------------------------------------------------------------------------- load
def load(modeling_ovis, export: Path, report: Report):
    import torch

    print(f"== load {export} with {modeling_ovis.__file__}")
    model, info = modeling_ovis.Ovis.from_pretrained(
        str(export), torch_dtype=torch.float32, output_loading_info=True, trust_remote_code=False
    )
    llm_cfg = model.llm.config
    tied = getattr(llm_cfg, "tie_word_embeddings", False)
    missing = [k for k in info["missing_keys"] if not (tied and k == "llm.lm_head.weight")]
    for what in ("unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(what):
            report.fail(f"load: {what}", info[what])
    if missing:
        report.fail("load: missing_keys (left at random init)", missing)
    if tied:
        report.same(
            "load: lm_head tied to the embedding",
            model.llm.get_output_embeddings().weight.data_ptr(),
            model.llm.get_input_embeddings().weight.data_ptr(),
        )
    # Every tensor of the export, as the original holds it after loading (bitwise).
    from safetensors import safe_open

    state = model.state_dict()
    worst, absent = 0.0, []
    for f in sorted(export.glob("*.safetensors")):
        with safe_open(f, "pt") as s:
            for k in s.keys():  # noqa: SIM118  (a safe_open handle is not iterable)
                if k not in state:
                    absent.append(k)
                else:
                    worst = max(worst, max_abs(state[k], s.get_tensor(k)))
    if absent:
        report.fail("load: export tensors the original has no parameter for", absent)
    report.diff("load: original's parameters vs the export's tensors", "weights", worst)
    print(
        f"  info: {type(model.visual_tokenizer).__name__}, llm {llm_cfg.model_type}, "
        f"formatter {model.config.conversation_formatter_class}, "
        f"image processor {type(model.visual_tokenizer.image_processor).__name__}"
    )
    return model


def _open_images(fixture: Path, names):
    import PIL.Image

    return [PIL.Image.open(fixture / n) for n in names]


def _disable_eos(model):
    # The fixtures' greedy tokens were decoded without an EOS stop.
    for cfg in (model.generation_config, model.llm.generation_config):
        if cfg is not None:  # the Ovis2.5 wrapper has none (transformers 4.51): its generate is the LLM's
            cfg.eos_token_id = None


# ------------------------------------------------------------------------------------------ Ovis 1.6 / Ovis2 (v2.0)
def compute_crops(model, template: Path):
    """Everything the crop-based (1.6 / v2.0) original computes on the inputs of a fixture: `template`'s images,
    max_partitions, conversations and generation prompts. Returns (expected.json dict, tensors, gradients) in the
    fixtures' format, so the same function serves a comparison and the writing of a new reference."""
    import torch

    inputs = json.loads((template / "expected.json").read_text())
    vt = model.visual_tokenizer
    pad = model.text_tokenizer.pad_token_id
    out = {"preprocess": {}, "format_and_forward": [], "generate": {}}
    tensors = {}

    for key, entry in inputs["preprocess"].items():
        name, mp = key.rsplit(".mp", 1)
        image = entry.get("image", f"images/{name}.png")
        max_partition = entry.get("max_partition", int(mp))
        pixels, placeholders = vt.preprocess_image(_open_images(template, [image])[0], max_partition=max_partition)
        out["preprocess"][key] = {
            "image": image,
            "max_partition": max_partition,
            "placeholders": placeholders,
            "n_crops": pixels.shape[0],
        }
        tensors[f"preprocess.{key}.pixel_values"] = pixels

    pixel_values, rows = [], []
    for i, sample in enumerate(inputs["format_and_forward"]):
        prompt, ids, pixels, labels = model.preprocess_inputs(
            copy.deepcopy(sample["conversations"]),
            _open_images(template, sample["images"]),
            max_partition=sample["max_partition"],
            generation_preface=None,
            return_labels=True,
        )
        out["format_and_forward"].append(
            {
                "conversations": sample["conversations"],
                "images": sample["images"],
                "max_partition": sample["max_partition"],
                "prompt": prompt,
                "input_ids": ids.tolist(),
                "labels": labels.tolist(),
            }
        )
        if pixels is None:  # text only: the original's training path takes a zero image
            side = vt.get_image_size()[0]
            pixels = torch.zeros(1, 3, side, side)
        tensors[f"forward.sample{i}.pixel_values"] = pixels
        pixel_values.append(pixels)
        rows.append((ids, labels))

    width = max(len(ids) for ids, _ in rows)  # the right-padded batch
    batch = {
        "input_ids": torch.full((len(rows), width), pad, dtype=torch.long),
        "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
        "labels": torch.full((len(rows), width), -100, dtype=torch.long),
    }
    for r, (ids, labels) in enumerate(rows):
        batch["input_ids"][r, : len(ids)] = ids
        batch["attention_mask"][r, : len(ids)] = 1
        batch["labels"][r, : len(ids)] = labels
    tensors.update({f"forward.batch.{k}": v for k, v in batch.items()})

    model.train()  # the fixtures' forward: training mode (no dropout in these configs)
    with torch.no_grad():
        _, embeds, merged_labels, merged_mask = model.merge_multimodal(
            batch["input_ids"], batch["attention_mask"], batch["labels"], pixel_values
        )
        tensors["forward.sample0.visual_tokens"] = vt(pixel_values[0])
    tensors.update(
        {
            "forward.merged.inputs_embeds": embeds,
            "forward.merged.labels": merged_labels,
            "forward.merged.attention_mask": merged_mask.long(),
        }
    )
    model.zero_grad(set_to_none=True)
    result = model(pixel_values=pixel_values, **batch)
    result.loss.backward()
    tensors["forward.logits"] = result.logits.detach()
    tensors["forward.loss"] = result.loss.detach().reshape(1)
    out["loss"] = result.loss.item()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    model.eval()
    _disable_eos(model)
    alone = {}
    for key, sample in inputs["generate"].items():
        if key == "batched_left_padded":
            continue
        prompt, ids, pixels = model.preprocess_inputs(
            copy.deepcopy(sample["conversations"]),
            _open_images(template, sample["images"]),
            max_partition=sample["max_partition"],
        )
        n = len(sample["new_token_ids"])
        with torch.inference_mode():
            new = model.generate(
                ids.unsqueeze(0),
                pixel_values=[pixels],
                attention_mask=torch.ones_like(ids)[None],
                max_new_tokens=n,
                do_sample=False,
                pad_token_id=pad,
                use_cache=True,
            )
        out["generate"][key] = {
            "conversations": sample["conversations"],
            "images": sample["images"],
            "max_partition": sample["max_partition"],
            "prompt": prompt,
            "input_ids": ids.tolist(),
            "new_token_ids": new[0, -n:].tolist(),
        }
        alone[key] = (ids, pixels)

    batched = inputs["generate"].get("batched_left_padded")
    if batched:  # v2.0 decodes a left-padded batch (1.6 has none)
        keys = batched["samples"]
        width = max(len(alone[k][0]) for k in keys)
        ids = torch.full((len(keys), width), pad, dtype=torch.long)
        attn = torch.zeros((len(keys), width), dtype=torch.long)
        for row, k in enumerate(keys):
            n_ids = len(alone[k][0])
            ids[row, width - n_ids :] = alone[k][0]
            attn[row, width - n_ids :] = 1
        n = len(batched["new_token_ids"][0])
        with torch.inference_mode():
            new = model.generate(
                ids,
                pixel_values=[alone[k][1] for k in keys],
                attention_mask=attn,
                max_new_tokens=n,
                do_sample=False,
                pad_token_id=pad,
                use_cache=True,
            )
        out["generate"]["batched_left_padded"] = {"samples": keys, "new_token_ids": new[:, -n:].tolist()}
    return out, tensors, grads


def check_crops(model, fixture: Path, report: Report):
    from safetensors.torch import load_file

    got, t, grads = compute_crops(model, fixture)
    want = json.loads((fixture / "expected.json").read_text())
    want_t = load_file(fixture / "expected.safetensors")

    print("== preprocessing (the export's preprocessor_config.json in the original's preprocess_image)")
    worst = 0.0
    for key, entry in want["preprocess"].items():
        report.same(f"preprocess {key}: placeholders", got["preprocess"][key]["placeholders"], entry["placeholders"])
        worst = max(worst, max_abs(t[f"preprocess.{key}.pixel_values"], want_t[f"preprocess.{key}.pixel_values"]))
    report.diff("preprocess: pixel values (all images x max_partition)", "pixels", worst)

    print("== format_and_forward")
    for i, (g, w) in enumerate(zip(got["format_and_forward"], want["format_and_forward"])):
        for field in ("prompt", "input_ids", "labels"):
            report.same(f"sample{i}: {field}", g[field], w[field])
        key = f"forward.sample{i}.pixel_values"
        report.diff(f"sample{i}: pixel values", "pixels", max_abs(t[key], want_t[key]))
    for k in ("input_ids", "attention_mask", "labels"):
        report.same(f"batch: {k}", t[f"forward.batch.{k}"].tolist(), want_t[f"forward.batch.{k}"].tolist())
    mask = want_t["forward.merged.attention_mask"]
    report.same("merged: attention mask", t["forward.merged.attention_mask"].tolist(), mask.tolist())
    report.same("merged: labels", t["forward.merged.labels"].tolist(), want_t["forward.merged.labels"].tolist())
    report.diff(
        "merged: inputs_embeds (real positions)",
        "embeds",
        max_abs(t["forward.merged.inputs_embeds"], want_t["forward.merged.inputs_embeds"], mask),
    )
    report.diff(
        "sample0: visual tokens",
        "visual_tokens",
        max_abs(t["forward.sample0.visual_tokens"], want_t["forward.sample0.visual_tokens"]),
    )
    report.diff(
        "forward: logits (real positions)", "logits", max_abs(t["forward.logits"], want_t["forward.logits"], mask)
    )
    report.diff("forward: loss", "loss", abs(got["loss"] - want["loss"]))
    compare_grads(grads, fixture, report)

    print("== greedy generation (the original's generate, no EOS stop)")
    for key, w in want["generate"].items():
        g = got["generate"][key]
        if key == "batched_left_padded":
            report.same(f"generate {'+'.join(w['samples'])} left-padded batch", g["new_token_ids"], w["new_token_ids"])
            continue
        report.same(f"generate {key}: prompt", g["prompt"], w["prompt"])
        report.same(f"generate {key}: input_ids", g["input_ids"], w["input_ids"])
        report.same(f"generate {key}: {len(w['new_token_ids'])} greedy tokens", g["new_token_ids"], w["new_token_ids"])


def write_reference(model, export: Path, template: Path, directory: Path):
    """A reference fixture for a model that has none: the original's results on `template`'s inputs, in the
    fixtures' layout (checkpoint/ = the export, images/ = the template's), for ovis-lit's tests/parity.py."""
    import shutil

    from safetensors.torch import save_file

    got, tensors, grads = compute_crops(model, template)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(export, directory / "checkpoint", dirs_exist_ok=True)
    shutil.copytree(template / "images", directory / "images", dirs_exist_ok=True)
    (directory / "expected.json").write_text(json.dumps(got, indent=1) + "\n")
    save_file({k: v.contiguous() for k, v in tensors.items()}, directory / "expected.safetensors")
    save_file({k: v.contiguous() for k, v in grads.items()}, directory / "expected_grads.safetensors")
    print(f"== wrote the original's results on {template.name}'s inputs to {directory} (loss {got['loss']:.6f})")


def compare_grads(got, fixture: Path, report: Report):
    path = fixture / "expected_grads.safetensors"
    if not path.is_file():
        print("  (no expected_grads.safetensors)")
        return
    from safetensors.torch import load_file

    expected = load_file(path)
    report.same("gradients: parameters that receive one", sorted(got), sorted(expected))
    worst = max((max_abs(got[k], expected[k]) for k in expected if k in got), default=float("inf"))
    report.diff("gradients vs expected_grads.safetensors", "grads", worst)


# ----------------------------------------------------------------------------------------------- Ovis2.5 (main)
def check_native(model, fixture: Path, report: Report):
    import torch
    from safetensors.torch import load_file

    expected = json.loads((fixture / "expected.json").read_text())
    tensors = load_file(fixture / "expected.safetensors")
    vt = model.visual_tokenizer

    def visual(sample):
        if sample.get("video"):
            return {"videos": [_open_images(fixture, sample["video"])]}
        if sample.get("images"):
            return {"images": _open_images(fixture, sample["images"])}
        return {}

    print("== preprocessing (the export's preprocessor_config.json in the original's preprocess)")
    worst = 0.0
    for key, entry in expected["preprocess"].items():
        if key == "smart_resize":
            for case in entry:
                got = vt.smart_resize(
                    case["height"],
                    case["width"],
                    factor=case["factor"],
                    min_pixels=case["min_pixels"],
                    max_pixels=case["max_pixels"],
                )
                report.same(f"smart_resize {case['height']}x{case['width']}", list(got), case["result"])
            continue
        if "video" in entry:
            pixels, grid = vt.preprocess(
                video=_open_images(fixture, entry["video"]),
                min_pixels=entry["min_pixels"],
                max_pixels=entry["max_pixels"],
            )
        else:
            pixels, grid = vt.preprocess(
                image=_open_images(fixture, [entry["image"]])[0],
                min_pixels=entry["min_pixels"],
                max_pixels=entry["max_pixels"],
            )
        report.same(f"preprocess {key}: grid_thw", grid.tolist(), entry["grid_thw"])
        worst = max(worst, max_abs(pixels, tensors[f"preprocess.{key}.pixel_values"]))
    report.diff("preprocess: pixel values (all images, video)", "pixels", worst)

    print("== format_and_forward")
    sample0_grid = None
    for i, sample in enumerate(expected["format_and_forward"]):
        prompt, ids, pixels, grids, labels = model.preprocess_inputs(
            copy.deepcopy(sample["conversations"]),
            min_pixels=sample["min_pixels"],
            max_pixels=sample["max_pixels"],
            generation_preface=None,
            return_labels=True,
            **visual(sample),
        )
        report.same(f"sample{i}: prompt", prompt, sample["prompt"])
        report.same(f"sample{i}: input_ids", ids[0].tolist(), sample["input_ids"])
        report.same(f"sample{i}: labels", labels[0].tolist(), sample["labels"])
        report.same(f"sample{i}: grid_thws", None if grids is None else grids.tolist(), sample["grid_thws"])
        if pixels is not None and f"forward.sample{i}.pixel_values" in tensors:
            report.diff(
                f"sample{i}: pixel values", "pixels", max_abs(pixels, tensors[f"forward.sample{i}.pixel_values"])
            )
        if i == 0:
            sample0_grid = grids

    batch = {
        k: tensors[f"forward.batch.{k}"] for k in ("input_ids", "attention_mask", "labels", "pixel_values", "grid_thws")
    }
    mask = batch["attention_mask"]
    model.train()
    with torch.no_grad():
        embeds = model.merge_multimodal(batch["input_ids"], batch["pixel_values"], batch["grid_thws"])
        report.diff(
            "merged: inputs_embeds (real positions)",
            "embeds",
            max_abs(embeds, tensors["forward.merged.inputs_embeds"], mask),
        )
        visual_tokens = vt(tensors["forward.sample0.pixel_values"], sample0_grid)
    report.diff(
        "sample0: visual tokens", "visual_tokens", max_abs(visual_tokens, tensors["forward.sample0.visual_tokens"])
    )
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    report.diff("forward: logits (real positions)", "logits", max_abs(out.logits, tensors["forward.logits"], mask))
    report.diff("forward: loss", "loss", abs(out.loss.item() - expected["loss"]))
    out.loss.backward()
    compare_grads({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, fixture, report)

    print("== greedy generation (the original's generate, no EOS stop)")
    model.eval()
    _disable_eos(model)
    pad = model.text_tokenizer.pad_token_id

    def greedy(ids, pixels, grids, n):
        with torch.inference_mode():
            return model.generate(ids, pixel_values=pixels, grid_thws=grids, max_new_tokens=n, do_sample=False,
                                  pad_token_id=pad, use_cache=True)

    alone = {}
    for key, sample in expected["generate"].items():
        if key == "batched_left_padded":
            continue
        prompt, ids, pixels, grids = model.preprocess_inputs(
            copy.deepcopy(sample["conversations"]),
            min_pixels=sample["min_pixels"],
            max_pixels=sample["max_pixels"],
            **visual(sample),
        )
        report.same(f"generate {key}: prompt", prompt, sample["prompt"])
        report.same(f"generate {key}: input_ids", ids[0].tolist(), sample["input_ids"])
        n = len(sample["new_token_ids"])
        new = greedy(ids, pixels, grids, n)
        report.same(f"generate {key}: {n} greedy tokens", new[0, -n:].tolist(), sample["new_token_ids"])
        alone[key] = (ids[0], pixels, grids)

    batched = expected["generate"].get("batched_left_padded")
    if batched:
        keys = batched["samples"]
        width = max(len(alone[k][0]) for k in keys)
        ids = torch.full((len(keys), width), pad, dtype=torch.long)
        for row, k in enumerate(keys):
            ids[row, width - len(alone[k][0]) :] = alone[k][0]
        present = [k for k in keys if alone[k][1] is not None]
        pixels = torch.cat([alone[k][1] for k in present]) if present else None
        grids = torch.cat([alone[k][2] for k in present]) if present else None
        n = len(batched["new_token_ids"][0])
        new = greedy(ids, pixels, grids, n)
        report.same(f"generate {'+'.join(keys)} left-padded batch", new[:, -n:].tolist(), batched["new_token_ids"])


# ----------------------------------------------------------------------------------- no fixture: does it run?
def smoke(model, images_dir: Path, native: bool, report: Report):
    import torch

    images = sorted(images_dir.glob("*.png"))[:3]
    if not images:
        report.fail("smoke", f"no *.png under {images_dir}")
        return
    print(f"== smoke run on {[p.name for p in images]} (no fixture: runs, shapes, finiteness)")
    opened = _open_images(images_dir, [p.name for p in images])
    conversations = [{"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": "A shape."}]
    if native:
        for image, path in zip(opened, images):
            pixels, grid = model.visual_tokenizer.preprocess(image=image, min_pixels=256, max_pixels=9216)
            print(f"  ok   preprocess {path.name}: pixel values {tuple(pixels.shape)}, grid {grid.tolist()}")
        _, ids, pixels, grids, labels = model.preprocess_inputs(
            conversations,
            images=[opened[0]],
            min_pixels=256,
            max_pixels=9216,
            generation_preface=None,
            return_labels=True,
        )
        inputs = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": labels,
            "pixel_values": pixels,
            "grid_thws": grids,
        }
        gen = {"pixel_values": pixels, "grid_thws": grids}
        prompt_ids = ids
    else:
        for image, path in zip(opened, images):
            for mp in (1, 9):
                pixels, placeholders = model.visual_tokenizer.preprocess_image(image, max_partition=mp)
                print(
                    f"  ok   preprocess {path.name} max_partition {mp}: crops {tuple(pixels.shape)}, "
                    f"{len(placeholders)} placeholders"
                )
        _, ids, pixels, labels = model.preprocess_inputs(
            conversations, [opened[0]], max_partition=9, generation_preface=None, return_labels=True
        )
        inputs = {
            "input_ids": ids[None],
            "attention_mask": torch.ones_like(ids)[None],
            "labels": labels[None],
            "pixel_values": [pixels],
        }
        gen = {"pixel_values": [pixels], "attention_mask": torch.ones_like(ids)[None]}
        prompt_ids = ids[None]
    model.train()
    out = model(**inputs)
    out.loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    finite = bool(torch.isfinite(out.logits).all()) and all(
        torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None
    )
    print(
        f"  info training forward: logits {tuple(out.logits.shape)}, loss {out.loss.item():.4f}; "
        f"{len(no_grad)} parameters without a gradient {no_grad[:6]}"
    )
    report.same("smoke: logits and gradients finite", finite, True)
    model.eval()
    _disable_eos(model)
    with torch.inference_mode():
        new = model.generate(
            prompt_ids, max_new_tokens=5, do_sample=False, pad_token_id=model.text_tokenizer.pad_token_id, **gen
        )
    report.same("smoke: generate returns 5 new tokens", new.shape[-1], 5)
    print(f"  info greedy tokens {new[0].tolist()}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", type=Path, required=True, help="checkout of the original (branch v1.6/v2.0/main)")
    parser.add_argument("--export", type=Path, required=True, help="an ovis-lit export in the original layout")
    parser.add_argument("--fixture", type=Path, help="tests/fixtures/ovis{16,2,25}-reference-tiny")
    parser.add_argument("--images", type=Path, help="without --fixture: a folder of PNGs for the smoke run")
    parser.add_argument(
        "--write-reference",
        type=Path,
        metavar="DIR",
        help="with --fixture (1.6/Ovis2 only): instead of comparing, write the original's results on "
        "that fixture's inputs as a new reference fixture in DIR (for a model with no reference)",
    )
    args = parser.parse_args(argv)

    import torch

    torch.manual_seed(0)
    report = Report()
    native = "vit_config" in json.loads((args.export / "config.json").read_text())  # Ovis2.5 layout
    modeling_ovis = import_original(args.original)
    if native:
        # The original's ViT _init_weights names classes its file does not define; loading fills every weight.
        from ovis.model.vit import modeling_siglip2_navit

        modeling_siglip2_navit.Siglip2PreTrainedModel._init_weights = lambda self, module: None
    try:
        model = load(modeling_ovis, args.export, report)
    except Exception as e:  # noqa: BLE001  (the point of the check is to report the original's refusal)
        report.fail("load", f"the original refuses the export: {type(e).__name__}: {e}")
        model = None
    if model is not None:
        try:
            if args.write_reference:
                if native or not args.fixture:
                    raise SystemExit("--write-reference needs --fixture and a 1.6/Ovis2 export")
                write_reference(model, args.export, args.fixture, args.write_reference)
            elif args.fixture:
                (check_native if native else check_crops)(model, args.fixture, report)
            else:
                smoke(model, args.images or args.export, native, report)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            report.fail("check stopped", f"the original raised {type(e).__name__}: {e}")
    print(f"== {'FAILED: ' + ', '.join(report.failed) if report.failed else 'all checks passed'}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
