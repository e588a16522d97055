"""The tiny task's document functions, written as lmms-eval's own task utils are (see ovis_lit_tiny.yaml)."""


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def process_results(doc, results):
    prediction = results[0].strip().lower()
    return {"exact_match": float(prediction == doc["answer"].strip().lower())}
