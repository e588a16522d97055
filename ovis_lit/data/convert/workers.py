"""Running a converter function over many entries on worker processes, in input order, stoppable by SIGTERM.

A worker never raises: an entry comes back as its `Converted` sample or as the `Rejected` that refused it (a
converter bug or an input nobody foresaw is reported as `error_<ExceptionType>`, not fatal).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from ...rejection import Rejected
from .checks import Converted, entry_id
from .shards import encode_meta

ConvertFn = Callable[[int, Any], Converted]


def _call(job: tuple[ConvertFn, int, Any]) -> tuple[int, Any, Converted | Rejected]:
    fn, index, entry = job
    try:
        converted = fn(index, entry)
        converted.json_bytes = encode_meta(converted.meta)
        return index, None, converted
    except Rejected as exn:
        return index, entry_id(entry, index), exn
    except Exception as exn:  # a converter bug or an input nobody foresaw: reported, not fatal
        return index, entry_id(entry, index), Rejected(f"error_{type(exn).__name__}", str(exn))


@contextmanager
def worker_pool(workers: int) -> Iterator[Any]:
    """`workers` processes (None for in-process work with 1). Made before `sigterm_as_interrupt` is entered, so
    the workers keep SIGTERM's default action: a worker stuck on a lock inherited through fork (which Python-level
    handlers never get to run in) still ends when the pool is terminated."""
    if workers <= 1:
        yield None
        return
    with multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers) as pool:
        yield pool


def pool_map(fn: ConvertFn, entries: Iterable[Any], pool: Any, workers: int, chunk: int) -> Iterator:
    """(index, id, Converted | Rejected) in input order, from the pool's processes (in-process without one)."""
    jobs = ((fn, i, e) for i, e in enumerate(entries))
    if pool is None:
        yield from map(_call, jobs)
        return
    while True:
        block = list(itertools.islice(jobs, chunk * workers))
        if not block:
            break
        yield from pool.imap(_call, block, chunksize=max(1, min(64, len(block) // (4 * workers))))


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While converting, SIGTERM (a scheduler's stop, `kill`) unwinds like Ctrl-C, so no `.tmp` shard is left.
    A process forked meanwhile (a pool worker replacing a dead one) ends as SIGTERM's default would end it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked worker: die as SIGTERM would have made it
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
