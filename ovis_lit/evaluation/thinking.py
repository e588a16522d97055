"""Greedy generation with a thinking budget (Ovis2.5 / Qwen3 thinking mode).

Phase 1 generates at most `thinking_budget` tokens. A sample that has not closed its thinking (`</think>`) nor
stopped (EOS) by then is told to conclude: a fixed sentence ending in `</think>` is appended, as the original's
`chat(..., thinking_budget=...)` does. Every sample that has not stopped then continues (phase 2) up to
`max_new_tokens` new tokens in all, the appended sentence included (as the original counts it). Unlike the
original, phase 1 never runs past `max_new_tokens` (a budget at or above it is plain generation).
"""

from __future__ import annotations

import torch
from transformers.generation.streamers import BaseStreamer

from ..model.ovis import OvisModel
from ..processing.native_resolution import NATIVE_IMAGE_START_ID, NATIVE_VIDEO_START_ID

# What the original appends when the budget runs out inside the thinking.
BUDGET_EXHAUSTED_TEXT = (
    "\n\nConsidering the limited time by the user, I have to give the solution based on the thinking directly now."
    "\n</think>\n\n"
)


def _left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), longest), dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        ids[i, longest - len(row):] = torch.tensor(row, dtype=torch.long, device=device)
        mask[i, longest - len(row):] = 1
    return ids, mask


def _until_eos(tokens: list[int], eos: set[int]) -> tuple[list[int], bool]:
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[: i + 1], True
    return tokens, False


@torch.no_grad()
def generate_with_thinking_budget(
    model: OvisModel,
    tokenizer,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pixel_values: torch.Tensor | None,
    grid_thws: torch.Tensor | None,
    thinking_budget: int,
    max_new_tokens: int,
    eos_token_ids: list[int],
    pad_token_id: int,
    budget_exhausted_text: str = BUDGET_EXHAUSTED_TEXT,
    sampling: dict | None = None,
    streamer=None,
) -> list[list[int]]:
    """New tokens per sample (up to and including EOS), greedy unless `sampling` (model.generate options). The
    prompts should open a thinking turn (the generation preface "" of the Qwen3 format). `streamer` (a transformers
    `BaseStreamer`, one sample): handed phase 1's tokens, the concluding sentence and phase 2's tokens as one stream."""
    if not 0 < thinking_budget:
        raise ValueError(f"thinking_budget must be positive, got {thinking_budget}")
    eos = set(eos_token_ids)
    think_end = tokenizer.convert_tokens_to_ids("</think>")
    extra = tokenizer(budget_exhausted_text, add_special_tokens=False)["input_ids"]
    common = dict(do_sample=False, **(sampling or {}), eos_token_id=list(eos), pad_token_id=pad_token_id)
    budget = min(thinking_budget, max_new_tokens)
    phase1 = {} if streamer is None else {"streamer": _StreamPhase(streamer, skip_prompt=False, end=False)}
    first = model.generate(input_ids, attention_mask, pixel_values, grid_thws, max_new_tokens=budget, **common,
                           **phase1)
    outputs, prompts, open_rows, room = [], [], [], []
    for i, row in enumerate(first.tolist()):
        new, stopped = _until_eos(row, eos)
        if not stopped and len(new) < max_new_tokens:
            if think_end not in new:
                new = new + extra  # the budget ran out inside the thinking: conclude it
                if streamer is not None:
                    streamer.put(torch.tensor([extra]))
            if len(new) < max_new_tokens:
                open_rows.append(i)
                room.append(max_new_tokens - len(new))
                prompts.append(input_ids[i][attention_mask[i].bool()].tolist() + new)
        outputs.append(new)
    if open_rows:
        # the same images, for the rows that continue: patches and grids of the other rows are left out
        ids, mask = _left_pad(prompts, pad_token_id, input_ids.device)
        pixels, grids = _rows_visual_input(input_ids, attention_mask, pixel_values, grid_thws, open_rows)
        phase2 = {} if streamer is None else {"streamer": _StreamPhase(streamer, skip_prompt=True, end=True)}
        second = model.generate(ids, mask, pixels, grids, max_new_tokens=max(room), **common, **phase2)
        for i, n, row in zip(open_rows, room, second.tolist()):  # greedy: a shorter run is a prefix
            outputs[i] = outputs[i] + _until_eos(row[:n], eos)[0]
    elif streamer is not None:
        streamer.end()
    return outputs


class _StreamPhase(BaseStreamer):
    """One `generate` call's view of the caller's streamer, so that the two phases make one stream: phase 2's prompt
    (generate's first put: phase 1's tokens again) is not handed over, and only the last phase ends the stream."""

    def __init__(self, streamer: BaseStreamer, skip_prompt: bool, end: bool):
        self.streamer, self.skip_prompt, self.ends = streamer, skip_prompt, end

    def put(self, value):
        if self.skip_prompt:
            self.skip_prompt = False
            return
        self.streamer.put(value)

    def end(self):
        if self.ends:
            self.streamer.end()


def split_thinking(tokenizer, new_tokens: list[int]) -> tuple[str, str]:
    """(thinking, answer) of generated tokens: the thinking runs up to and including the first `</think>`, as the
    original's `chat()` splits them; without `</think>` all of it is the answer."""
    think_end = tokenizer.convert_tokens_to_ids("</think>")
    if think_end in new_tokens:
        cut = new_tokens.index(think_end) + 1
        thinking, answer = new_tokens[:cut], new_tokens[cut:]
    else:
        thinking, answer = [], new_tokens
    return (tokenizer.decode(thinking, skip_special_tokens=True).strip(),
            tokenizer.decode(answer, skip_special_tokens=True).strip())


def _rows_visual_input(input_ids, attention_mask, pixel_values, grid_thws, rows):
    """The patches and grids of the images of `rows` (images are in batch order, each row's counted by its
    start indicators)."""
    if pixel_values is None or grid_thws is None or not len(grid_thws):
        return None, None
    starts = ((input_ids == NATIVE_IMAGE_START_ID) | (input_ids == NATIVE_VIDEO_START_ID)) & attention_mask.bool()
    per_row = starts.sum(dim=1).tolist()
    sizes = (grid_thws[:, 0] * grid_thws[:, 1] * grid_thws[:, 2]).tolist()
    image_of_row, image = [], 0
    for count in per_row:
        image_of_row.append(list(range(image, image + count)))
        image += count
    starts_at = [sum(sizes[:k]) for k in range(len(sizes))]
    keep = [k for r in rows for k in image_of_row[r]]
    if not keep:
        return None, None
    pixels = torch.cat([pixel_values[starts_at[k]:starts_at[k] + sizes[k]] for k in keep])
    return pixels, grid_thws[keep]
