"""Batched greedy answers from an OvisModel for (question, images) pairs."""

from __future__ import annotations

from typing import Iterable

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..model.ovis import OvisModel
from ..processing.processor import OvisProcessor


@torch.no_grad()
def generate_answers(
    model: OvisModel,
    processor: OvisProcessor,
    queries: Iterable[tuple[str, list[Image.Image]]],
    batch_size: int = 8,
    max_new_tokens: int = 16,
    progress: bool = True,
    desc: str = "generating",
) -> list[str]:
    """Greedy answers, in order. Batches are left-padded, so batch size never changes an answer."""
    queries = list(queries)
    was_training = model.training
    model.eval()
    answers: list[str] = []
    eos = [processor.tokenizer.eos_token_id]
    try:
        for start in tqdm(range(0, len(queries), batch_size), desc=desc, disable=not progress, leave=False):
            chunk = queries[start : start + batch_size]
            samples = [processor.query(question, images) for question, images in chunk]
            batch = processor.collate(samples, padding_side="left")
            device = next(model.parameters()).device
            new = model.generate(
                batch["input_ids"].to(device),
                batch["attention_mask"].to(device),
                batch["pixel_values"].to(device),
                grid_thws=batch["grid_thws"].to(device) if "grid_thws" in batch else None,  # Ovis2.5
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=processor.pad_token_id,
            )
            answers += processor.tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return [a.strip() for a in answers]
