"""Video multiple choice in Video-MME's question layout, with the videos on local disk; and the shapes videos.

The question file is Video-MME's (`videomme/test-*.parquet` of lmms-lab/Video-MME), or the same rows as a JSON list
or JSON Lines: video_id, duration (short / medium / long), domain, sub_category, videoID, question_id, task_type,
question, options (["A. ...", "B. ...", ...]), answer (a letter). The video of a row is
`<video_dir>/<videoID>.mp4` (any video extension) or a folder `<video_dir>/<videoID>/` of frame images; `video_dir`
defaults to `data/` beside the question file (where Video-MME's archives unpack). `frames` frames are sampled
uniformly from each video (decoding files needs PyAV, the `video` extra); `min_pixels` / `max_pixels` set each
frame's pixel budget (default: the processor's; the original Ovis2.5 recipe trains video frames at 448 x 448).

Scored like MMBench without rotations (the letter extracted from the answer), with accuracy per task type, per
duration and per domain. The prompt is Video-MME's own (without subtitles); the shapes videos' benchmark asks with
the instruction its training data teaches instead.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from ...data import shapes, shapes_video
from ...rejection import Rejected
from ..mcq import LETTERS
from ..tsv import WARNINGS_PER_REASON
from ..video import VideoSource, find_video
from .base import Benchmark, Item, Scores, ratio, register
from .mmbench import score_choices
from .shapes import write_if_missing

log = logging.getLogger(__name__)

VIDEOMME_INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video. "
                        "Respond with only the letter (A, B, C, or D) of the correct option.")
VIDEOMME_ANSWER_PREFIX = "The best answer is:"
_LETTERED = re.compile(r"^\s*([A-I])[.)]\s*(.*)$", re.DOTALL)


def read_question_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a question file: parquet, a JSON list, or JSON Lines. ValueError for a file wrong as a whole."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such question file")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        text = path.read_bytes().decode("utf-8-sig")
        try:
            rows = json.loads(text)
        except json.JSONDecodeError:
            try:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as exn:
                raise ValueError(f"{path}:{exn.lineno}: neither a JSON list nor JSON Lines: {exn.msg}") from None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty list of question rows")
    return rows


def options_of(raw: Any) -> dict[str, str]:
    """["A. text", "B. text", ...] -> {"A": "text", ...}; options without their letter take them in order."""
    if not isinstance(raw, (list, tuple)) or not all(isinstance(o, str) for o in raw):
        raise Rejected("options are not a list of strings")
    options = {}
    for k, option in enumerate(raw):
        if k >= len(LETTERS):
            raise Rejected("more options than letters")
        match = _LETTERED.match(option)
        letter, text = (match.group(1), match.group(2).strip()) if match else (LETTERS[k], option.strip())
        if letter in options:
            raise Rejected(f"option {letter} given twice")
        options[letter] = text
    return options


@register
class VideoMME(Benchmark):
    kind = "videomme"
    prompt_template = VIDEOMME_INSTRUCTION + "\n{question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n" + VIDEOMME_ANSWER_PREFIX
    default_max_new_tokens = 16
    default_video_dir = "data"  # beside the question file
    default_frames = 8

    def __init__(self, path, max_new_tokens: int | None = None, video_dir: str | None = None,
                 frames: int | None = None, min_pixels: int | None = None, max_pixels: int | None = None,
                 **options: Any):
        super().__init__(path, max_new_tokens, min_pixels=min_pixels, max_pixels=max_pixels, **options)
        self.video_dir = Path(video_dir) if video_dir else self.path.parent / self.default_video_dir
        self.frames = int(frames or self.default_frames)
        if self.frames < 1:
            raise ValueError(f"{self.kind}: frames must be positive, got {self.frames}")

    def prompt(self, question: str, options: dict[str, str]) -> str:
        lines = [VIDEOMME_INSTRUCTION, question] + [f"{k}. {v}" for k, v in options.items()]
        return "\n".join(lines + [VIDEOMME_ANSWER_PREFIX])

    def read_items(self) -> list[Item]:
        items, seen = [], set()
        for number, row in enumerate(read_question_rows(self.path)):
            try:
                item = self._item(row, number)
                if item.key in seen:
                    raise Rejected("duplicate question_id")
                seen.add(item.key)
                items.append(item)
            except Rejected as e:
                self.skipped[str(e)] += 1
                loud = not self.quiet and self.skipped[str(e)] <= WARNINGS_PER_REASON
                log.log(logging.WARNING if loud else logging.DEBUG, "%s row %d: skipped (%s)", self.path, number, e)
        return items

    def _item(self, row: Any, number: int) -> Item:
        if not isinstance(row, dict):
            raise Rejected("row is not an object")
        question, answer = row.get("question"), row.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise Rejected("no question")
        options = options_of(row.get("options"))
        if len(options) < 2:
            raise Rejected("fewer than two options")
        if not isinstance(answer, str) or answer.strip().upper() not in options:
            raise Rejected("answer is not one of the option letters")
        video_id = row.get("videoID", row.get("video_id"))
        if not isinstance(video_id, (str, int)):
            raise Rejected("no videoID")
        key = str(row.get("question_id", number))
        video = VideoSource(find_video(self.video_dir, str(video_id)), self.frames, self.min_pixels, self.max_pixels)
        target = {"answer": answer.strip().upper(), "options": options, "group": key,
                  "category": str(row.get("task_type") or "all"), "l2_category": "",
                  "duration": str(row.get("duration") or ""), "domain": str(row.get("domain") or "")}
        return Item(key, self.prompt(question.strip(), options), [], target, video)

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        scores = score_choices(items, answers, circular=False)
        for field in ("duration", "domain"):
            tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for item, prediction in zip(items, scores.predictions):
                if item.target[field]:
                    tally[item.target[field]][0] += prediction["correct"]
                    tally[item.target[field]][1] += 1
            scores.details[f"per_{field}"] = {k: ratio(r, n) for k, (r, n) in sorted(tally.items())}
        return scores

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "video_dir": str(self.video_dir), "frames": self.frames}


@register
class ShapesVideo(VideoMME):
    """The shapes videos' held-out split (`shapes_video.write_video_mc`, written on first use when missing)."""

    kind = "shapes_video"
    instruction = shapes.MC_INSTRUCTION  # what the shapes training data teaches (conf/data/shapes.yaml)
    prompt_template = "{question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n" + shapes.MC_INSTRUCTION
    default_frames = shapes_video.FRAMES

    def __init__(self, path, max_new_tokens: int | None = None, video_dir: str | None = None,
                 frames: int | None = None, build_if_missing: bool = True, **options: Any):
        super().__init__(path, max_new_tokens, video_dir or str(Path(path).with_suffix("")), frames, **options)
        self.build_if_missing = build_if_missing

    def prompt(self, question: str, options: dict[str, str]) -> str:
        return shapes.mc_prompt(question, list(options.values()))

    def read_items(self) -> list[Item]:
        if self.build_if_missing:
            _, n, seed = shapes_video.VIDEO_MC_TEST
            write_if_missing(self.path, "the shapes videos' held-out set",
                             lambda path: shapes_video.write_video_mc(path, n, seed))
        return super().read_items()
