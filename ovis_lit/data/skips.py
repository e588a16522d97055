"""Counted skips: the counting that keeps a run going when a sample cannot be used (it raises `Rejected`).

Every stage of the data path (shard reading, decoding, formatting, batching) drops what it cannot use by counting it
under a reason; the counts travel with the batches (see BatchStream) into the run's skip counters and logs.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable

from ..rejection import Rejected

log = logging.getLogger(__name__)


def note_skip(counter: Counter, seen: Counter | None, reason: str, exn: Exception | str) -> None:
    """Count a skip; log it (a warning the 1st, 10th, 100th, ... time a reason comes up in this worker)."""
    counter[reason] += 1
    if seen is None:
        log.debug("skipped (%s): %s", reason, exn)
        return
    seen[reason] += 1
    n = seen[reason]
    if str(n).rstrip("0") == "1":  # 1, 10, 100, ...
        unexpected = isinstance(exn, Exception) and not isinstance(exn, Rejected)
        log.warning("data: skipped %d so far for %s (this worker); latest: %s", n, reason, exn,
                    exc_info=unexpected and n == 1)
    else:
        log.debug("skipped (%s): %s", reason, exn)


def counting_handler(
    counter: Counter, default_reason: str | None = None, seen: Counter | None = None
) -> Callable[[Exception], bool]:
    """A webdataset exception handler that counts and carries on. Rejected counts as its reason; any other
    exception as `default_reason`, or (None) as `error_<ExceptionType>` so that a bug is not taken for bad data."""

    def handler(exn: Exception) -> bool:
        if isinstance(exn, Rejected):
            reason = exn.reason
        else:
            reason = default_reason or f"error_{type(exn).__name__}"
        note_skip(counter, seen, reason, exn)
        return True  # keep going

    return handler
