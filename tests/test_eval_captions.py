"""Captions: scores are pycocoevalcap's (COCOEvalCap's computation), COCO's ROUGE-L and BLEU rules, the no-Java
tokeniser, COCO_VAL.tsv."""

import math

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from ovis_lit.evaluation import caption_metrics
from ovis_lit.evaluation.benchmarks import build_benchmark
from ovis_lit.evaluation.caption_metrics import caption_scores, ptb_like_tokens

from .test_eval_fixtures import png_b64, write_tsv

needs_java = pytest.mark.skipif(not caption_metrics.java_available(), reason="no java on PATH (PTB, METEOR)")

# a small hand-made set: punctuation, clitics, brackets, case, several references of unequal length
CANDIDATES = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs (brown) play in the snow!",
    "a pizza isn't on the table",
    "",
]
REFERENCES = [
    ["A surfer rides a large wave.", "A man on a surfboard riding a wave in the ocean.", "Surfing man."],
    ["Two brown dogs playing in snow.", "Dogs run through the snow, don't they?"],
    ["A pizza sitting on top of a wooden table.", "The table has a pizza on it."],
    ["A red stop sign.", "A stop sign on a street corner."],
]


def coco_eval_cap(candidates, references, meteor=False):
    """What COCOEvalCap.evaluate does (less SPICE): PTB-tokenise both sides, then each scorer on the whole set."""
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": c}] for i, c in enumerate(candidates)})
    out = {}
    bleu, bleu_images = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        out[f"bleu{n + 1}"] = (bleu[n], list(bleu_images[n]))
    scorers = [("rougeL", Rouge()), ("cider", Cider())]
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        scorers.append(("meteor", Meteor()))
    for name, scorer in scorers:
        score, per_image = scorer.compute_score(gts, res)
        out[name] = (score, list(per_image))
    return out


def assert_same(ours, per_image, expected):
    assert set(ours) == set(expected)
    for name, (score, images) in expected.items():
        assert ours[name] == pytest.approx(score, abs=1e-12), name
        assert [p[name] for p in per_image] == pytest.approx(images, abs=1e-12), name


@needs_java
def test_scores_equal_coco_eval_cap():
    ours, per_image, info = caption_scores(CANDIDATES, REFERENCES, tokenizer="ptb", meteor=False)
    assert info == {"toolkit": "pycocoevalcap", "tokenizer": "ptb", "meteor": False}
    assert_same(ours, per_image, coco_eval_cap(CANDIDATES, REFERENCES))
    assert ours["cider"] > 0 and per_image[3]["cider"] == 0.0


@needs_java
@pytest.mark.slow  # METEOR's Java process loads its paraphrase table (~20 s; started once here, for both sides)
def test_meteor_equals_coco_eval_cap(monkeypatch):
    from pycocoevalcap.meteor import meteor

    one = meteor.Meteor()
    monkeypatch.setattr(meteor, "Meteor", lambda: one)
    ours, per_image, info = caption_scores(CANDIDATES, REFERENCES, tokenizer="ptb", meteor="auto")
    assert info["meteor"] is True
    assert_same(ours, per_image, coco_eval_cap(CANDIDATES, REFERENCES, meteor=True))
    assert 0 < ours["meteor"] < 1


def test_rouge_l_is_coco_beta_and_best_precision_recall():
    # one reference: LCS 4 of candidate 4 / reference 8 -> P 1, R 0.5; F with beta 1.2, not F1 (0.667)
    one, _, _ = caption_scores(["a b c d", "x"], [["a b c d e f g h"], ["x"]], tokenizer="ptb_like", meteor=False)
    beta2 = 1.2**2
    assert one["rougeL"] == pytest.approx(((1 + beta2) * 0.5 / (0.5 + beta2) + 1.0) / 2)
    # best precision (1, from the long reference) and best recall (1, from "a b c") come from different
    # references and still make a perfect score; the best single reference would give only 0.880
    _, per_image, _ = caption_scores(["a b c d", "x"], [["a b c", "a b c d e f g h"], ["x"]],
                                     tokenizer="ptb_like", meteor=False)
    assert per_image[0]["rougeL"] == pytest.approx(1.0)


def test_bleu_takes_the_shorter_reference_on_a_length_tie():
    # candidate 5 words, references of 4 and 6 words: both 1 away; the shorter one (4) is the reference length,
    # so there is no brevity penalty (the longer would give exp(1 - 6/5) = 0.819)
    scores, per_image, _ = caption_scores(["a b c d e", "p q r s t"], [["a b c d", "a b c d e f"], ["p q r s t"]],
                                          tokenizer="ptb_like", meteor=False)
    assert per_image[0]["bleu1"] == pytest.approx(1.0, abs=1e-6)
    assert per_image[0]["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6)
    # and a real brevity penalty when the closest reference is longer
    _, per_image, _ = caption_scores(["a b c d e", "p"], [["a b c d e f"], ["p"]], tokenizer="ptb_like",
                                     meteor=False)
    assert per_image[0]["bleu1"] == pytest.approx(math.exp(1 - 6 / 5), abs=1e-6)


def test_ptb_like_tokens():
    assert ptb_like_tokens('A woman isn\'t holding a "cell phone"; she\'s smiling!') == \
        ["a", "woman", "is", "n't", "holding", "a", "cell", "phone", "she", "'s", "smiling"]
    assert ptb_like_tokens("Two dogs' toys (red) on the U.S. flag...") == \
        ["two", "dogs", "toys", "-lrb-", "red", "-rrb-", "on", "the", "u.s.", "flag"]
    assert ptb_like_tokens("It can't be -- no way: 3.5 cats? $5 & 50%") == \
        ["it", "ca", "n't", "be", "no", "way", "3.5", "cats", "$", "5", "&", "50", "%"]
    assert ptb_like_tokens("Mr. Smith's red-ish\ncar.") == ["mr.", "smith", "'s", "red-ish", "car"]
    assert ptb_like_tokens("") == []


SENTENCES = [s for refs in REFERENCES for s in refs] + CANDIDATES + [
    "We'll go, they'd say, I'm here, you've seen, they're gone.", "A sign that says 'STOP' in red.",
    "an old-fashioned clock tower, 1920s style.", "won't do", "[A] {b}", "Children play  in\nthe park",
]


@needs_java
def test_ptb_like_agrees_with_ptb_on_ordinary_captions():
    ptb = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(SENTENCES)})
    assert [" ".join(ptb_like_tokens(s)) for s in SENTENCES] == [ptb[i][0] for i in range(len(SENTENCES))]


def test_without_java_falls_back_and_says_so(monkeypatch):
    monkeypatch.setattr(caption_metrics, "java_available", lambda: False)
    scores, _, info = caption_scores(["a red circle"], [["a red circle"]])
    assert info == {"toolkit": "pycocoevalcap", "tokenizer": "ptb_like", "meteor": False}
    assert "meteor" not in scores and scores["bleu1"] == pytest.approx(1.0)
    with pytest.raises(RuntimeError, match="java"):
        caption_scores(["x"], [["x"]], tokenizer="ptb")
    with pytest.raises(RuntimeError, match="java"):
        caption_scores(["x"], [["x"]], tokenizer="ptb_like", meteor=True)


def test_bad_inputs():
    with pytest.raises(ValueError, match="one list"):
        caption_scores(["x"], [])
    with pytest.raises(ValueError, match="at least one reference"):
        caption_scores(["x"], [[]])
    with pytest.raises(ValueError, match="tokenizer"):
        caption_scores(["x"], [["x"]], tokenizer="nltk")
    with pytest.raises(ValueError, match="tokenizer"):
        build_benchmark("coco_caption", path="x.tsv", tokenizer="nltk")


def test_coco_caption_tsv(tmp_path):
    rows = [
        {"index": 0, "image": png_b64("red"), "answer": str(["a red square", "red square"])},
        {"index": 1, "image": png_b64("blue"), "answer": str(["a blue square"])},
        {"index": 2, "image": png_b64("blue"), "answer": "[]"},
    ]
    bench = build_benchmark("coco_caption", path=write_tsv(tmp_path / "COCO_VAL.tsv", rows), tokenizer="ptb_like",
                            meteor=False)
    items = bench.load()
    assert bench.skipped == {"no reference captions": 1}
    assert items[0].prompt == "Describe this image in one sentence."
    assert items[0].target["references"] == ["a red square", "red square"]
    scores = bench.score(items, ["A red square.", ""])
    assert scores.metrics["empty_answers"] == 1 and scores.metrics["images"] == 2
    assert scores.predictions[1]["cider"] == 0.0 and scores.metrics["cider"] > 0
    assert scores.predictions[0]["bleu1"] == pytest.approx(1.0, abs=1e-6)
    assert scores.details["caption_metrics"]["tokenizer"] == "ptb_like"
    assert bench.describe()["tokenizer"] == "ptb_like"
    empty = bench.score([], [])
    assert empty.metrics["cider"] == 0.0 and empty.metrics["images"] == 0


def test_vlmevalkit_mode_scores_untokenised_captions_times_100(tmp_path):
    rows = [{"index": 0, "image": png_b64("red"), "answer": str(["A red square.", "red square"])},
            {"index": 1, "image": png_b64("blue"), "answer": str(["A blue square"]), "question": "What is shown?"}]
    bench = build_benchmark("coco_caption", path=write_tsv(tmp_path / "COCO_VAL.tsv", rows), mode="vlmevalkit",
                            meteor="auto")
    items = bench.load()
    assert items[0].prompt.startswith("Please describe this image in general.") and items[1].prompt == "What is shown?"
    answers = ["a red square", "A blue square"]
    scores = bench.score(items, answers)
    # VLMEvalKit's COCO_Caption_Scorer: the scorers on the raw strings (case and "." kept), times 100, no METEOR
    gts = {0: ["A red square.", "red square"], 1: ["A blue square"]}
    res = {0: ["a red square"], 1: ["A blue square"]}
    assert scores.metrics["cider"] == pytest.approx(100 * Cider().compute_score(gts, res)[0])
    assert scores.metrics["rougeL"] == pytest.approx(100 * Rouge().compute_score(gts, res)[0])
    bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]
    assert [scores.metrics[f"bleu{n}"] for n in range(1, 5)] == pytest.approx([100 * b for b in bleu])
    assert "meteor" not in scores.metrics and scores.details["caption_metrics"]["tokenizer"] == "none"
    assert bench.describe()["mode"] == "vlmevalkit"
    with pytest.raises(ValueError, match="mode"):
        build_benchmark("coco_caption", path="x.tsv", mode="lmms_eval")
