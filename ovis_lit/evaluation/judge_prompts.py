"""The judge prompts, pinned: each is a versioned constant whose name, version and SHA-256 go into the summary, so a
judged score always says which prompt produced it. A changed prompt is a new version, never an edit of an old one.

They follow the behaviour of the prompts VLMEvalKit sends to its GPT judge (ovis-lit's own wording and examples):
- MMVet grader: a few-shot table "question | ground truth | prediction | correctness" where `<AND>` in the ground
  truth needs every part present and `<OR>` any one, graded 0.0, 0.1, ... 1.0; the judge completes the last cell.
- MathVista extractor: five solved examples (an integer, a float with one decimal, a float with two, a list, an
  option letter), then the question (its hint, question and choices as in the TSV) and the model's response; the
  judge writes the extracted answer.
`prompt_file` (a UTF-8 text file with the same {placeholders}) replaces a built-in prompt; its SHA-256 is recorded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    version: str
    template: str  # {field} placeholders; nothing else in the text is special

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()

    @property
    def fields(self) -> set[str]:
        return set(PLACEHOLDER.findall(self.template))

    def render(self, **values: str) -> str:
        """Each {field} of the template replaced once: braces in the values (LaTeX, code) are left alone."""
        missing = self.fields - set(values)
        if missing:
            raise KeyError(f"{self.name} {self.version}: no value for {sorted(missing)}")
        return PLACEHOLDER.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), self.template)

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


MMVET_GRADER_V1 = JudgePrompt("mmvet-grader", "v1", """\
Grade how correct an AI model's prediction is, compared with the ground truth answer to a question.
In the ground truth, <AND> joins parts that must all appear in the prediction for it to be fully correct, and
<OR> joins alternatives of which any single one makes the prediction fully correct.
Give a correctness score of 0.0 (completely wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9 or 1.0 (completely
correct). Reply by filling in only the empty correctness cell of the last row.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
Which two numbers are circled? | 3 <AND> 8 | The circled number is 7. | 0.0
Which two numbers are circled? | 3 <AND> 8 | The circled number is 3. | 0.5
Which two numbers are circled? | 3 <AND> 8 | 8, and perhaps 6 | 0.5
Which two numbers are circled? | 3 <AND> 8 | The circled numbers are 3 and 8. | 1.0
What colour is the car? | red <OR> maroon | It is a maroon car. | 1.0
Why is this cartoon funny? | The dog is reading a newspaper about dogs at the breakfast table like a person, \
which is absurd; the cat looks at it with suspicion. | A dog reads the paper at breakfast. | 0.4
Why is this cartoon funny? | The dog is reading a newspaper about dogs at the breakfast table like a person, \
which is absurd; the cat looks at it with suspicion. | The joke is that the dog behaves like a human, reading \
a newspaper over breakfast, which is absurd, while the cat eyes it suspiciously. | 1.0
{question} | {answer} | {prediction} | """)

MATHVISTA_EXTRACT_V1 = JudgePrompt("mathvista-extract", "v1", """\
Read the examples below. Then extract the final answer from the last model response and write it after the last
"Extracted answer:".

Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.
Question: How many balls are left after two are taken away?
Model response: Seven balls remain once two of the nine are removed.
Extracted answer: 7

Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final \
value, e.g., 1.2, 1.3, 1.4, at the end.
Question: What is the length of the shorter side? (Unit: cm)
Model response: Measuring against the ruler, the shorter side is 2.5 cm long.
Extracted answer: 2.5

Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final \
value, e.g., 1.23, 1.34, 1.45, at the end.
Question: What is the total price of a pen and a notebook? (Unit: $)
Model response: A pen costs $0.75 and a notebook $2.10, so together they cost $2.85.
Extracted answer: 2.85

Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], \
[1.2, 1.3, 1.4], at the end.
Question: In which two months is the temperature the same?
Model response: The curve has the same value in March and in October, that is months 3 and 10.
Extracted answer: [3, 10]

Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: Which angle is the largest?
Choices: (A) 30° (B) 45° (C) 60° (D) 90°
Model response: The largest angle is (D) 90°.
Extracted answer: D

{question}
Model response: {prediction}
Extracted answer:""")

BUILT_IN = {p.name: p for p in (MMVET_GRADER_V1, MATHVISTA_EXTRACT_V1)}


def prompt_from_file(path: str | Path, like: JudgePrompt) -> JudgePrompt:
    """A user's prompt in place of a built-in one: it must use the same placeholders."""
    path = Path(path)
    template = path.read_text(encoding="utf-8")
    prompt = JudgePrompt(like.name, f"file:{path.resolve()}", template)
    if prompt.fields != like.fields:
        raise ValueError(f"{path}: a {like.name} prompt needs exactly the placeholders "
                         f"{sorted('{' + f + '}' for f in like.fields)}, found {sorted(prompt.fields)}")
    return prompt
