"""Batched greedy answers from an OvisModel for (question, images) pairs."""

from __future__ import annotations

from typing import Iterable

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..model.ovis import OvisModel
from ..processing.processor import OvisProcessor
from ..processing.video import VideoFrames


@torch.no_grad()
def generate_answers(
    model: OvisModel,
    processor: OvisProcessor,
    queries: Iterable[tuple[str | list[dict], list[Image.Image]]],
    batch_size: int = 8,
    max_new_tokens: int = 16,
    progress: bool = True,
    desc: str = "generating",
    thinking: bool = False,
    thinking_budget: int | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    sampling: dict | None = None,
    streamer=None,
) -> list[str]:
    """Greedy answers (unless `sampling`), in order. Batches are left-padded, so batch size never changes an answer.

    `thinking` (Qwen3 format, Ovis2.5): the prompt opens a thinking turn, and the answer is what follows `</think>`
    (`max_new_tokens` counts the thinking too); `thinking_budget`: at most that many thinking tokens, then the
    thinking is concluded (evaluation/thinking.py). `min_pixels` / `max_pixels`: each image's pixel budget at native
    resolution (Ovis2.5; None: the processor's); a video's frames carry their own (`VideoFrames.with_budget`).

    A question may also be a whole conversation (a list of turns ending with the user's, `chat_processor.user_turn`).
    `sampling`: model.generate options that replace greedy decoding (do_sample, temperature, top_p, top_k; the
    caller seeds). `streamer`: a transformers `BaseStreamer` handed the new tokens as they are generated (one query
    only; with a thinking budget, both phases make one stream)."""
    from .thinking import generate_with_thinking_budget, split_thinking

    if thinking and processor.chat_format != "qwen3":
        raise ValueError(f"thinking needs the qwen3 chat format (Ovis2.5), this processor's is {processor.chat_format!r}")
    if thinking_budget is not None and not thinking:
        raise ValueError("thinking_budget is set but thinking is off")
    queries = list(queries)
    if streamer is not None and len(queries) != 1:
        raise ValueError(f"a streamer follows one answer: got {len(queries)} queries")
    decoding = {"do_sample": False, **(sampling or {})}
    streaming = {} if streamer is None else {"streamer": streamer}
    was_training = model.training
    model.eval()
    answers: list[str] = []
    eos = [processor.tokenizer.eos_token_id]
    try:
        for start in tqdm(range(0, len(queries), batch_size), desc=desc, disable=not progress, leave=False):
            chunk = queries[start : start + batch_size]
            options = {"thinking": True} if thinking else {}
            pixels = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
            samples = [processor.query(question, images, **options,
                                       **({} if isinstance(images, VideoFrames) else pixels))
                       for question, images in chunk]
            batch = processor.collate(samples, padding_side="left")
            device = next(model.parameters()).device
            inputs = (
                batch["input_ids"].to(device),
                batch["attention_mask"].to(device),
                batch["pixel_values"].to(device),
                batch["grid_thws"].to(device) if "grid_thws" in batch else None,  # Ovis2.5
            )
            if thinking_budget is not None:
                new = generate_with_thinking_budget(model, processor.tokenizer, *inputs, thinking_budget,
                                                    max_new_tokens, eos, processor.pad_token_id,
                                                    sampling=sampling, streamer=streamer)
            else:
                new = model.generate(*inputs[:3], grid_thws=inputs[3], max_new_tokens=max_new_tokens, **decoding,
                                     eos_token_id=eos, pad_token_id=processor.pad_token_id, **streaming).tolist()
            if thinking:
                answers += [split_thinking(processor.tokenizer, row)[1] for row in new]
            else:
                answers += processor.tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return [a.strip() for a in answers]
