"""chat.py's batch mode: a JSONL file of questions -> a JSONL file of answers, one output line per input line, in
order, through evaluation's `generate_answers` (the batched generation evals/run.py uses).

Each input line is a JSON object: {"question": "...", "images": ["a.png", ...], "id": anything}; "images" (or a
single "image") are local paths, relative ones taken from the input file's folder; "id" is copied to the output.
Each output line is {"line": n, "id": ..., "question": ..., "answer": "..."} or, for a line that cannot be answered
(bad JSON, a missing or undecodable image, a URL, ...), {"line": n, "id": ..., "error": "<reason>: <detail>"}: an
error is recorded on its line and the run carries on.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from ..evaluation.generation import generate_answers
from ..model.ovis import OvisModel
from ..processing.chat_processor import ChatProcessor
from ..rejection import Rejected
from .images import open_local_image
from .session import Decoding

log = logging.getLogger(__name__)


@dataclass
class Request:
    line: int  # 1-based line number in the input file
    record: dict[str, Any] = field(default_factory=dict)  # what the output line starts with (line, id, question)
    question: str = ""
    images: list[Image.Image] = field(default_factory=list)
    error: str | None = None


def read_request(line: int, raw: bytes, base: Path) -> Request:
    """One input line -> a Request, its images decoded; a line that cannot be used gets its `error` instead."""
    request = Request(line, {"line": line})
    try:
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise Rejected("bad_json", f"not UTF-8 ({e.reason} at byte {e.start})") from None
        except ValueError as e:
            raise Rejected("bad_json", str(e) if raw.strip() else "an empty line") from None
        if not isinstance(value, dict):
            raise Rejected("bad_json", f"a line must be a JSON object, got {type(value).__name__}")
        if "id" in value:
            request.record["id"] = value["id"]
        question = value.get("question")
        if not isinstance(question, str) or not question.strip():
            raise Rejected("no_question", "each line needs a non-empty string \"question\"")
        request.record["question"] = request.question = question
        images = value.get("images", [value["image"]] if "image" in value else [])
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
            raise Rejected("bad_images", "\"images\" must be a list of paths (strings)")
        request.images = [open_local_image(path, base) for path in images]
    except Rejected as e:
        request.error = str(e)
    return request


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            yield number, raw.rstrip(b"\r\n")


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _answer(model: OvisModel, processor: ChatProcessor, requests: list[Request], decoding: Decoding) -> None:
    """Fills each request's answer (in its record) or its error. One batch first; if the processor refuses an input
    the decoder accepted, each request alone, so only the refused ones get an error (left padding: the batch size
    never changes an answer)."""
    queries = [(r.question, r.images) for r in requests]
    try:
        answers = generate_answers(model, processor, queries, batch_size=len(queries), progress=False,
                                   **decoding.options())
        for request, answer in zip(requests, answers):
            request.record["answer"] = answer
        return
    except ValueError:  # Rejected included; e.g. more <image> marks in a question than images
        pass
    for request, query in zip(requests, queries):
        try:
            request.record["answer"] = generate_answers(model, processor, [query], batch_size=1, progress=False,
                                                        **decoding.options())[0]
        except ValueError as e:
            request.error = str(e)


def answer_file(model: OvisModel, processor: ChatProcessor, source: str | Path, output: str | Path,
                decoding: Decoding | None = None, batch_size: int = 8, progress: bool = True) -> dict[str, Any]:
    """Answers every line of `source` into `output` (written batch by batch); returns the counts and timing."""
    source, output = Path(source), Path(output)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not source.is_file():
        raise FileNotFoundError(f"batch file {source} does not exist")
    if output.resolve() == source.resolve():
        raise ValueError(f"the output {output} would overwrite the batch file")
    decoding = (decoding or Decoding()).check(processor)
    output.parent.mkdir(parents=True, exist_ok=True)
    counts, seconds = Counter(), 0.0
    with open(output, "w", encoding="utf-8") as out, tqdm(desc="answering", unit="line", disable=not progress) as bar:
        for chunk in _chunks(_lines(source), batch_size):
            requests = [read_request(number, raw, source.parent) for number, raw in chunk]
            ready = [r for r in requests if r.error is None]
            if ready:
                started = time.perf_counter()
                _answer(model, processor, ready, decoding)
                seconds += time.perf_counter() - started
            for request in requests:
                if request.error is not None:
                    counts["errors"] += 1
                    log.warning("line %d: %s", request.line, request.error)
                    record = request.record | {"error": request.error}
                else:
                    counts["answered"] += 1
                    record = request.record
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(requests))
    return {"answered": counts["answered"], "errors": counts["errors"], "output": str(output),
            "generation_seconds": round(seconds, 3),
            "samples_per_s": round(counts["answered"] / seconds, 2) if seconds else 0.0}
