"""The one exception for "this sample cannot be used": training data, converters and evaluation all raise it.

Whoever reads samples catches `Rejected`, counts it under `reason` and carries on (a skip counter in training, a
converter's report, a benchmark's `skipped`); a run never stops for one bad sample. `reason` is a short, stable key
(the counters and reports are keyed by it, and tests assert on it); `detail` says which sample and what was wrong,
for logs and reject lists only.

Training and the converters share snake_case reasons (`decode_error`, `too_many_pixels`, `missing_image`,
`bad_json`, ...: see `data.samples` and `data.convert`); evaluation counts the phrases its summaries have always
shown (`"undecodable image"`, `"no human answers"`, ...; see `evaluation.suite.EVAL_REASONS`).

It is a ValueError (a value that cannot be used), so code that guards a call with `except ValueError` keeps
working; code that re-labels ValueErrors must let `Rejected` through with its own reason.
"""

from __future__ import annotations


class Rejected(ValueError):
    """A sample, row or image that is skipped; `reason` is what it is counted as, `detail` what to log."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
