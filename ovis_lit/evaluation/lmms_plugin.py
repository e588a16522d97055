"""What lmms-eval (0.7.3) loads to find the `ovis_lit` model: the entry point of group `lmms_eval.models`.

lmms-eval reads every entry point of that group when `lmms_eval.models` is imported, whatever model a run asks
for, so this module imports nothing heavy: the adapter (`lmms_adapter.OvisLit`) is imported only when a run names
`--model ovis_lit`. pyproject.toml declares it:

    [project.entry-points."lmms_eval.models"]
    ovis_lit = "ovis_lit.evaluation.lmms_plugin:manifest"
"""

from __future__ import annotations

MODEL_ID = "ovis_lit"
ADAPTER_CLASS = "ovis_lit.evaluation.lmms_adapter.OvisLit"
ENTRY_POINT = "ovis_lit.evaluation.lmms_plugin:manifest"  # as pyproject.toml names it (the tests check both agree)


def manifest():
    """lmms-eval's registration record: `--model ovis_lit` resolves to the simple (prompt + visuals) adapter."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=ADAPTER_CLASS)
