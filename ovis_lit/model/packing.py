"""Packing a padded batch's samples into rows for the fast path's training loss.

Each sample's real tokens are copied into a row (no sample is split across rows) with position ids that restart
at 0 for every sample; the model's packed loss then runs the LLM over the rows instead of the padded batch
(`sparse_loss.next_token_loss`). The rows' plan is chosen to waste few positions (`plan_rows`).
"""

from __future__ import annotations

import torch

from ..constants import IGNORE_ID


def _first_fit_decreasing(lengths: list[int], capacity: int, order: list[int] | None = None) -> list[list[int]]:
    """Sample indices per row, longest samples first (`order`, if the caller sorted already), each into the first
    row with room."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order if order is not None else sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([])
            room.append(capacity)
            slot = len(rows) - 1
        rows[slot].append(i)
        room[slot] -= lengths[i]
    return rows


def plan_rows(lengths: list[int]) -> tuple[int, list[list[int]]]:
    """(row capacity, sample indices per row) with the fewest row x capacity positions.

    Rows as long as the longest sample L leave the tails of many rows empty; a slightly longer row often packs the
    batch into fewer rows. For each row count R this finds the shortest capacity in [L, 2L] at which
    first-fit-decreasing needs at most R rows (binary search), and keeps the best. Capping at 2L bounds the extra
    attention work of a dense block-diagonal mask.
    """
    longest, total = max(lengths), sum(lengths)
    if longest == 0:
        return 0, [list(range(len(lengths)))]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])

    def fit(capacity: int) -> list[list[int]]:
        return _first_fit_decreasing(lengths, capacity, order)

    best_rows = fit(longest)
    best = (len(best_rows) * longest, longest, best_rows)
    for n_rows in range(-(-total // (2 * longest)), len(best_rows)):
        lo, hi = max(longest, -(-total // n_rows)), 2 * longest
        if lo > hi or len(fit(hi)) > n_rows:
            continue
        while lo < hi:
            mid = (lo + hi) // 2
            if len(fit(mid)) <= n_rows:
                hi = mid
            else:
                lo = mid + 1
        rows = fit(lo)
        if len(rows) * lo < best[0]:
            best = (len(rows) * lo, lo, rows)
    return best[1], best[2]


def pack_rows(
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    one_row: bool = False,
    lengths: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack padded samples into rows (see `plan_rows`); no sample is split across rows.

    Returns embeddings [R, C, d], position_ids [R, C] that restart at 0 for every sample, and targets [R, C]. The
    unused tail of a row is one more zero "sample" (its positions restart too) whose targets are ignored. Rows
    rather than one long row keep a dense block-diagonal mask (CPU, eager/sdpa) from wasting quadratic work;
    `one_row` puts every sample, in batch order, into a single row without padding (for attention that takes
    sample boundaries, `packed_attention`). `lengths`: each sample's real tokens, if the caller has them already.
    """
    lengths = attention_mask.sum(dim=1).tolist() if lengths is None else lengths
    capacity, rows = (sum(lengths), [list(range(len(lengths)))]) if one_row else plan_rows(lengths)
    n_rows, device = len(rows), embeds.device
    first = [0] * len(lengths)  # flat position (row * capacity + column) of each sample's first token
    boundaries = []  # flat positions where position ids restart: every sample, and every row's unused tail
    for r, members in enumerate(rows):
        col = 0
        for i in members:
            first[i] = r * capacity + col
            boundaries.append(first[i])
            col += lengths[i]
        if col < capacity or not members:
            boundaries.append(r * capacity + col)
    real = attention_mask.bool()
    b, p = real.nonzero(as_tuple=True)  # sample-major, the order of each sample's tokens
    within = (real.cumsum(dim=1) - 1)[b, p]  # position inside the sample, whichever side it was padded on
    dest = torch.tensor(first, device=device)[b] + within
    flat = n_rows * capacity
    packed = embeds.new_zeros(flat, embeds.shape[-1]).index_put((dest,), embeds[b, p])
    packed_targets = targets.new_full((flat,), IGNORE_ID).index_put((dest,), targets[b, p])
    starts = torch.tensor(sorted({x for x in boundaries if x < flat}), dtype=torch.long, device=device)
    restart = torch.zeros(flat, dtype=torch.long, device=device).index_fill_(0, starts, 1)
    segment_start = starts[restart.cumsum(0) - 1]
    position_ids = torch.arange(flat, device=device) - segment_start
    shape = (n_rows, capacity)
    return packed.view(*shape, embeds.shape[-1]), position_ids.view(shape), packed_targets.view(shape)
