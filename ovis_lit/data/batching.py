"""How a stream groups samples into batches: a fixed number of samples (the default, as Ovis 1.6 trains), or as many
as fit in a token budget (Ovis2.5: samples at native resolution carry very different numbers of visual tokens).

A sample's tokens are the length of its ids: every visual token is one id (-300) there, so this counts visual and
text tokens alike, and it is the length the LLM runs over (the model packs a batch's real tokens into rows, see
`OvisModel`'s `pack_rows`, so padding costs no compute and the budget bounds what a step computes).

Batches are filled greedily in stream order: a sample that does not fit closes the batch and opens the next. Each
batch is therefore a contiguous run of the stream, so "where the stream stands after a batch" is still one
position per source, and a resumed run continues exactly (a look-ahead packer that filled gaps with later samples
would pack tighter, but a batch would no longer end at a stream position).
"""

from __future__ import annotations

from typing import Any, Iterator


def sample_tokens(sample: Any) -> int:
    """Visual + text tokens of a sample: the length of its ids (one id per visual token)."""
    return len(sample.input_ids)


class Batching:
    """Groups (sample, anything) items into batches. `add` returns the batches an item completes, in order;
    `flush` the last, partial one. `admits` says whether a sample can be batched at all."""

    def admits(self, sample: Any) -> bool:
        return True

    def add(self, item: tuple[Any, Any]) -> list[list[tuple[Any, Any]]]:
        raise NotImplementedError

    def flush(self) -> list[tuple[Any, Any]]:
        batch, self._batch = self._batch, []
        return batch

    def layout(self) -> dict[str, Any]:
        """What the batches depend on (a resumed run must keep it)."""
        raise NotImplementedError


class FixedCount(Batching):
    """`batch_size` samples per batch."""

    def __init__(self, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self._batch: list = []

    def add(self, item):
        self._batch.append(item)
        if len(self._batch) < self.batch_size:
            return []
        return [self.flush()]

    def layout(self):
        return {"batch_size": self.batch_size}


class TokenBudget(Batching):
    """As many samples as fit in `tokens` (visual + text, see `sample_tokens`); a sample over the budget on its own
    cannot be batched (the stream counts it as a skip, `over_token_budget`)."""

    def __init__(self, tokens: int):
        if tokens < 1:
            raise ValueError(f"token_budget must be positive, got {tokens}")
        self.tokens = tokens
        self._batch: list = []
        self._used = 0

    def admits(self, sample) -> bool:
        return sample_tokens(sample) <= self.tokens

    def add(self, item):
        n = sample_tokens(item[0])
        if n > self.tokens:
            raise ValueError(f"a sample of {n} tokens is over the budget of {self.tokens} (check `admits` first)")
        done = []
        if self._used + n > self.tokens:  # it does not fit: the batch so far is complete
            done.append(self.flush())
        self._batch.append(item)
        self._used += n
        if self._used == self.tokens:  # exactly full: nothing more can fit
            done.append(self.flush())
        return done

    def flush(self):
        self._used = 0
        return super().flush()

    def layout(self):
        return {"token_budget": self.tokens}


def batches(items: Iterator[tuple[Any, Any]], batching: Batching) -> Iterator[list[tuple[Any, Any]]]:
    """All batches of `items` (the last may be partial). For tests and benchmarks; BatchStream drives `add` itself."""
    for item in items:
        yield from batching.add(item)
    last = batching.flush()
    if last:
        yield last
