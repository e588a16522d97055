"""Choice and yes/no extraction from free text: each rule, case and punctuation, failures."""

import pytest

from ovis_lit.evaluation.extraction import extract_choice, extract_yes_no

OPTIONS = {"A": "red", "B": "blue", "C": "dark blue", "D": "Vitamin C"}


@pytest.mark.parametrize(
    "answer,letter,rule",
    [
        ("B", "B", "bare letter"),
        ("b", "B", "bare letter"),
        ("(B)", "B", "bare letter"),
        ("B.", "B", "bare letter"),
        ("  **B**\n", "B", "bare letter"),
        ("B)", "B", "bare letter"),
        ("Blue.", "B", "option text"),
        ("BLUE", "B", "option text"),
        ("vitamin c", "D", "option text"),
        ("B. blue", "B", "leading letter"),
        ("(C) dark blue", "C", "leading letter"),
        ("A: red", "A", "leading letter"),
        ("The answer is B.", "B", "answer phrase"),
        ("Answer: (C)", "C", "answer phrase"),
        ("I would pick option D here", "D", "answer phrase"),
        ("so (C) it is", "C", "bracketed letter"),
        ("I think B is right", "B", "standalone letter"),  # 'I' + lowercase word is the pronoun
        ("It is Vitamin C.", "D", "option text in answer"),  # the C inside an option's text is no letter
        ("A dark blue one", "C", "option text in answer"),  # article 'A'; 'blue' lies inside 'dark blue'
        ("a red shape", "A", "option text in answer"),
    ],
)
def test_choice_rules(answer, letter, rule):
    assert tuple(extract_choice(answer, OPTIONS)) == (letter, rule)


@pytest.mark.parametrize(
    "answer,rule",
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("green", "no match"),
        ("B or C", "several letters"),
        ("red and blue", "several options"),
        ("The answer is E", "no match"),  # E is not an option
        ("Z", "no match"),
    ],
)
def test_choice_failures(answer, rule):
    assert tuple(extract_choice(answer, OPTIONS)) == (None, rule)


def test_letters_outside_the_options_are_ignored():
    assert extract_choice("C", {"A": "x", "B": "y"}).letter is None
    assert extract_choice("(c)", {"A": "x", "B": "y", "C": "z"}).letter == "C"


@pytest.mark.parametrize(
    "answer,said",
    [
        ("Yes.", "yes"),
        ("yes, there is", "yes"),
        ("YES", "yes"),
        ("**No**", "no"),
        ("No, there is not.", "no"),
        ("Yes and no", "yes"),  # the first word decides
        ("There is no dog.", "no"),
        ("I can see it, yes", "yes"),
        ("", None),
        ("Maybe", None),
        ("I'm not sure, yes", None),  # yes and a negation: undecided
        ("There is a dog.", None),
    ],
)
def test_yes_no(answer, said):
    assert extract_yes_no(answer) == said
