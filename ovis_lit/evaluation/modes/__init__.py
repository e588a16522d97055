"""Scoring modes: each reproduces one community toolkit's answer extraction and metrics, so that a score can be set
beside the numbers published with that toolkit.

- `vlmevalkit`: open-compass/VLMEvalKit (e8e78f0) in its exact-matching mode (`--judge exact_matching`: no LLM
  judge; an answer its rules cannot read counts wrong). modes/vlmevalkit.py.
- `lmms_eval`: EvolvingLMMs-Lab/lmms-eval, the package 0.7.3 (git 75571cf plus its MMMU open-answer fix).
  modes/lmms_eval.py.

A benchmark lists the modes it supports, the first being its default; `mode:` in conf/benchmark/<name>.yaml chooses,
and the summary records the mode each benchmark was scored in. evals/README.md lists the rules and every known
toolkit quirk that is reproduced on purpose.
"""

VLMEVALKIT = "vlmevalkit"
LMMS_EVAL = "lmms_eval"
MODES = (VLMEVALKIT, LMMS_EVAL)
