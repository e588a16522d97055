"""What the benchmarks graded by an LLM judge share: the judge (built from the `judge` option, loaded at first use),
the pinned prompt (built-in version or `prompt_file`), and the record of both in the summary."""

from __future__ import annotations

from typing import Any

from ..judge import LazyJudge
from ..judge_prompts import JudgePrompt, prompt_from_file
from ..tsv import cell
from .base import Benchmark, Item

JUDGE_RETRIES = 5  # VLMEvalKit's: try i is sampled at temperature 0.5 * i (try 0 is greedy)


class JudgedBenchmark(Benchmark):
    prompt_template = "{question}"  # the question as it is: VLMEvalKit adds nothing for these benchmarks
    modes = ("vlmevalkit",)
    judge_prompt: JudgePrompt
    default_judge_max_new_tokens = 128

    def __init__(self, path, max_new_tokens=None, judge: dict[str, Any] | Any = None, prompt_file: str | None = None,
                 judge_max_new_tokens: int | None = None, mode: str = "vlmevalkit", **options):
        """`judge`: the judge's settings (path, kind, device, dtype, seed, processor), or a ready judge object
        (anything with generate(prompt, temperature, max_new_tokens) and describe())."""
        super().__init__(path, max_new_tokens, **options)
        if mode not in self.modes:
            raise ValueError(f"{self.kind}: mode {mode!r} is not one of {self.modes}")
        self.mode = mode
        self.judge = judge if hasattr(judge, "generate") else LazyJudge(judge)
        self.prompt = prompt_from_file(prompt_file, self.judge_prompt) if prompt_file else self.judge_prompt
        self.judge_max_new_tokens = judge_max_new_tokens or self.default_judge_max_new_tokens

    def check(self) -> None:
        super().check()
        if isinstance(self.judge, LazyJudge):
            self.judge.check()

    def ask(self, prompt: str, temperature: float) -> str:
        return self.judge.generate(prompt, temperature, self.judge_max_new_tokens)

    @staticmethod
    def question_item(row: dict[str, str], images, target: dict[str, Any]) -> Item:
        return Item(cell(row, "index"), cell(row, "question"), images(), target)

    def judge_record(self) -> dict[str, Any]:
        return {**self.judge.describe(), "prompt": self.prompt.describe(), "max_new_tokens": self.judge_max_new_tokens}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mode": self.mode, "judge": self.judge_record()}
