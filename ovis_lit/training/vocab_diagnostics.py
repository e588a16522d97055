"""How a run uses its visual vocabulary: a Lightning callback, and the statistics it computes.

Every `every_n_steps` optimiser steps the callback keeps what the visual head produced in that step's forward pass
(a forward hook on `visual_tokenizer.head`: no extra forward) and computes, over the batch's visual tokens (the
image words only; the indicator words are never produced by images):
- entropy: the mean over tokens of each token's entropy (nats): how spread one token's distribution is;
- usage share: the share of the image words that are the argmax of at least one token in the batch, and
  cumulatively over the captured batches of the run;
- perplexity: exp of the entropy of the batch's average distribution: about how many words the batch uses;
- dead words: words never the argmax of a token over the captured batches of the run (every batch with
  `every_n_steps: 1`, otherwise a sample of them).
At the end of training it writes `vocab_diagnostics.json` (the history, the run's totals, the most used words with
their nearest text tokens: cosine similarity of their visual-table rows to the LLM's input-embedding rows, decoded
with the tokenizer) and a picture of which patches of the last captured crops activate one visual word
(`visual_word_<id>.png`: the probability of that word at each visual token, as a heat map over the crop).

The distribution is the softmax of the head's logits (a Gumbel tokenizer's at its current temperature, without the
noise; a straight-through argmax one's plain softmax): what the tokens are drawn from or the argmax of. A connector
without a visual vocabulary (an MLP projector: no head over visual words, or `has_visual_vocabulary = False` on the
model or its visual tokenizer) is skipped with a note in the summary. Under DDP/FSDP each rank sees its own batches;
rank 0's are reported.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- statistics
def token_distribution(logits: torch.Tensor, tokenize_function: str = "softmax", tau: float = 1.0) -> torch.Tensor:
    """[tokens, words] probabilities in float32 from head logits (see the module docstring)."""
    logits = logits.detach().float().reshape(-1, logits.shape[-1])
    if tokenize_function == "gumbel_argmax":
        logits = logits / tau
    return torch.softmax(logits, dim=-1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each distribution along the last dimension (0 log 0 = 0)."""
    return -torch.special.xlogy(probs, probs).sum(-1)


def batch_statistics(probs: torch.Tensor) -> dict[str, Any]:
    """The batch's numbers from its [tokens, words] probabilities; `argmax_counts` is how often each word is a
    token's argmax (the run totals add these up)."""
    words = probs.shape[-1]
    counts = torch.bincount(probs.argmax(-1), minlength=words)
    return {
        "entropy": float(entropy(probs).mean()),
        "usage_share": float((counts > 0).sum()) / words,
        "perplexity": math.exp(float(entropy(probs.mean(0)))),
        "argmax_counts": counts,
    }


def nearest_text_tokens(visual_rows: torch.Tensor, text_table: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each visual-table row, the `k` text-embedding rows of highest cosine similarity: (ids [n, k], cosines)."""
    a = torch.nn.functional.normalize(visual_rows.detach().float(), dim=-1)
    b = torch.nn.functional.normalize(text_table.detach().float(), dim=-1)
    cosines, ids = (a @ b.T).topk(min(k, b.shape[0]), dim=-1)
    return ids, cosines


def heat_map_picture(crops: torch.Tensor, heat: torch.Tensor, title: str, scale: int = 4) -> Image.Image:
    """Each crop [3, S, S] (any normalisation: shown min-max scaled over all crops) side by side, tinted red by its
    token grid's `heat` [g, g] (the chosen word's probability at each visual token, from the picture's lowest: clear,
    to its highest: red), with the token grid drawn over it and the crop's largest probability below."""
    n, _, side, _ = crops.shape
    grid = heat.shape[-1]
    low, high = float(crops.min()), float(crops.max())
    floor = float(heat.min())
    span = float(heat.max()) - floor or 1.0
    cell, pad, caption = side * scale, 4, 14
    canvas = Image.new("RGB", (n * (cell + pad) + pad, cell + 2 * pad + 2 * caption), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 1), title, fill=(0, 0, 0))
    for k in range(n):
        pixels = crops[k].detach().float().permute(1, 2, 0).cpu().numpy()
        pixels = np.clip((pixels - low) / max(high - low, 1e-6), 0, 1)
        image = Image.fromarray((pixels * 255).astype(np.uint8)).resize((cell, cell), Image.NEAREST)
        weight = (heat[k].detach().float().cpu().numpy() - floor) / span
        alpha = Image.fromarray((weight * 160).astype(np.uint8)).resize((cell, cell), Image.NEAREST)
        image = Image.composite(Image.new("RGB", (cell, cell), (255, 0, 0)), image, alpha)
        tile = ImageDraw.Draw(image)
        for line in range(1, grid):
            at = line * cell // grid
            tile.line([(at, 0), (at, cell)], fill=(255, 255, 255))
            tile.line([(0, at), (cell, at)], fill=(255, 255, 255))
        left = pad + k * (cell + pad)
        canvas.paste(image, (left, pad + caption))
        draw.text((left, pad + caption + cell + 1), f"max p {float(heat[k].max()):.3f}", fill=(0, 0, 0))
    return canvas


# ------------------------------------------------------------------------------------------------- vocabulary
def vocabulary_problem(model: torch.nn.Module) -> str | None:
    """Why this model has no visual vocabulary to diagnose, or None when it has one (a head over the image words
    and a visual embedding table with a row per word)."""
    tokenizer, table = getattr(model, "visual_tokenizer", None), getattr(model, "vte", None)
    if tokenizer is None or table is None:
        return "the model has no visual tokenizer and visual embedding table"
    if not getattr(model, "has_visual_vocabulary", True) or not getattr(tokenizer, "has_visual_vocabulary", True):
        return "the connector has no visual vocabulary (an MLP projector)"
    if getattr(tokenizer, "head", None) is None or not isinstance(table, torch.nn.Embedding):
        return "the connector has no visual head and embedding table"
    if table.num_embeddings != getattr(tokenizer, "vocab_size", None):
        return "the embedding table's rows are not the visual vocabulary"
    return None


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A parameter's whole value (FSDP shards it as a DTensor: every rank must call this)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


# --------------------------------------------------------------------------------------------------- callback
class VisualVocabularyDiagnostics(L.Callback):
    """Log and summarise how the visual vocabulary is used (module docstring).

    every_n_steps: capture the forward pass of every this many optimiser steps (the first micro-batch of the step);
    top_words / nearest_k: how many of the most used words to describe, and their nearest text tokens;
    word: the visual word to picture (null: the run's most used word at the last capture);
    picture_crops: how many crops of the last captured batch the picture shows;
    output_dir: where the JSON and the picture go (null: the trainer's default_root_dir).
    """

    def __init__(self, every_n_steps: int = 50, top_words: int = 10, nearest_k: int = 5, word: int | None = None,
                 picture_crops: int = 8, output_dir: str | None = None):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.top_words = top_words
        self.nearest_k = nearest_k
        self.word = word
        self.picture_crops = picture_crops
        self.output_dir = output_dir
        self.skipped: str | None = None
        self.summary: dict[str, Any] | None = None  # after training: the headline numbers (the stage summary's)
        self._reset()

    def _reset(self) -> None:
        self._hook = None
        self._want = False  # capture the next head output
        self._step = 0  # the optimiser steps done when the current batch started
        self._logits: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None  # [words] argmax counts over the captured batches
        self._history: list[dict[str, Any]] = []
        self._picture: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (word, crops, heat [n, g, g])
        self._picture_note: str | None = None

    # hooks -----------------------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._reset()  # a fresh fit (a resumed one then loads the run so far: load_state_dict)

    def state_dict(self) -> dict[str, Any]:
        """The run so far travels in checkpoints, so a resumed run's totals cover the whole run."""
        return {"counts": self._counts, "history": self._history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._counts, self._history = state_dict.get("counts"), list(state_dict.get("history", []))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
        model = pl_module.model
        self.skipped = vocabulary_problem(model)
        if self.skipped:
            log.info("visual vocabulary diagnostics skipped: %s", self.skipped)
            return
        self._hook = model.visual_tokenizer.head.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        if self._want and module.training:
            # a copy: on the fast path the softmax overwrites the logits in place right after the head
            self._logits = output.detach().clone()
            self._want = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._hook is None:
            return
        step = int(trainer.global_step)  # optimiser steps done: this batch belongs to step `step` + 1
        has_images = isinstance(batch, dict) and batch.get("pixel_values") is not None and len(batch["pixel_values"])
        # the first batch with images of every n-th step (with gradient accumulation a step has several batches)
        first = not self._history or self._history[-1]["step"] != step
        self._want = bool(has_images) and step % self.every_n_steps == 0 and first
        self._step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._want = False
        if self._logits is None:
            return
        logits, self._logits = self._logits, None
        tokenizer = pl_module.model.visual_tokenizer
        probs = token_distribution(logits, tokenizer.tokenize_function, float(getattr(tokenizer, "tau", 1.0)))
        stats = batch_statistics(probs)
        counts = stats.pop("argmax_counts")
        self._counts = counts if self._counts is None else self._counts + counts
        words = probs.shape[-1]
        used = int((self._counts > 0).sum())
        stats.update(usage_share_cumulative=used / words, dead_words=words - used)
        pl_module.log_dict({f"vocab/{k}": float(v) for k, v in stats.items()}, on_step=True, on_epoch=False,
                           batch_size=probs.shape[0])
        self._history.append({"step": self._step, "tokens": int(probs.shape[0]),
                              **{k: round(float(v), 6) for k, v in stats.items()}})
        self._keep_picture(tokenizer, batch, probs, logits.shape)

    def _keep_picture(self, tokenizer, batch, probs: torch.Tensor, shape: torch.Size) -> None:
        if getattr(tokenizer, "native_resolution", False) or len(shape) != 3:
            self._picture_note = "no picture: tokens are not a square grid per crop (native resolution)"
            return
        crops, per_crop = shape[0], shape[1]
        grid = round(per_crop**0.5)
        if grid * grid != per_crop:
            self._picture_note = f"no picture: {per_crop} tokens per crop are not a square grid"
            return
        word = self.word if self.word is not None else int(self._counts.argmax())
        n = min(self.picture_crops, crops)
        heat = probs.reshape(crops, grid, grid, -1)[:n, :, :, word].clone()
        self._picture = (word, batch["pixel_values"][:n].detach().cpu().clone(), heat.cpu())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        described = None if self.skipped or self._counts is None else self._describe(trainer, pl_module)
        if not trainer.is_global_zero:
            return
        out = Path(self.output_dir or trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {"skipped": self.skipped, "every_n_steps": self.every_n_steps,
                                  "captures": len(self._history)}
        if described is not None:
            report.update(described)
            if self._picture is not None:
                word, crops, heat = self._picture
                path = out / f"visual_word_{word}.png"
                title = (f"visual word {word}: its probability per visual token, from {float(heat.min()):.3g} (clear) "
                         f"to {float(heat.max()):.3g} (red)")
                heat_map_picture(crops, heat, title).save(path)
                report["picture"], report["picture_word"] = str(path), word
            elif self._picture_note:
                report["picture"] = self._picture_note
        report["history"] = self._history
        path = out / "vocab_diagnostics.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        keys = ("skipped", "image_words", "usage_share_cumulative", "dead_words", "last", "picture")
        self.summary = {"file": str(path), **{k: report[k] for k in keys if k in report}}

    def _describe(self, trainer, pl_module) -> dict[str, Any]:
        """The run's totals and its most used words with their nearest text tokens."""
        model = pl_module.model
        counts = self._counts
        words = int(counts.numel())
        used = int((counts > 0).sum())
        text_table = _full(model.llm.get_input_embeddings().weight)
        table = _full(model.vte.weight)[:words]
        tokenizer = getattr(getattr(trainer, "datamodule", None), "processor", None)
        tokenizer = getattr(tokenizer, "tokenizer", None)
        if tokenizer is not None:  # rows past the tokenizer's vocabulary (padding) decode to nothing
            text_table = text_table[: min(len(tokenizer), text_table.shape[0])]
        top = counts.topk(min(self.top_words, words))
        ids, cosines = nearest_text_tokens(table[top.indices], text_table, self.nearest_k)
        total = max(1, int(counts.sum()))
        described = []
        for word, uses, near, cos in zip(top.indices.tolist(), top.values.tolist(), ids.tolist(), cosines.tolist()):
            if uses == 0:
                break
            described.append({"word": word, "uses": uses, "share": round(uses / total, 6), "nearest_text_tokens": [
                {"id": t, "token": tokenizer.decode([t]) if tokenizer is not None else None, "cosine": round(c, 4)}
                for t, c in zip(near, cos)]})
        last = {k: v for k, v in self._history[-1].items() if k not in ("tokens",)}
        return {"image_words": words, "usage_share_cumulative": used / words, "dead_words": words - used,
                "dead_word_ids": torch.nonzero(counts == 0).flatten()[:100].tolist(), "last": last,
                "top_words": described}
