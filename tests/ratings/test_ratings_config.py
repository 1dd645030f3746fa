"""The `ratings:` params section."""

from pathlib import Path

import pytest

from bas import config
from bas.errors import ConfigError
from tests import params_defaults

ROOT = Path(__file__).resolve().parents[2]


def test_project_params_give_the_bas_study_size():
    r = config.load(ROOT / "params.yaml").ratings
    # BaS: 1215 ratings a task = 81 pages x 5 methods x 3 raters.
    assert (r.ratings_per_question, r.num_prompt_questions, r.num_identity_questions) == (3, 81, 81)
    assert r.host == "127.0.0.1" and r.methods == ()


@pytest.mark.parametrize("key, value, message", [
    ("ratings_per_question", 0, r"ratings\.ratings_per_question = 0: must be >= 1"),
    ("num_prompt_questions", -1, r"ratings\.num_prompt_questions = -1"),
    ("methods", ["bas", "bas"], r"ratings\.methods .* a method is listed twice"),
    ("port", 70000, r"ratings\.port = 70000"),
    ("colour", "red", r"unknown key ratings\.colour"),
])
def test_bad_ratings_params_are_named(key, value, message):
    with pytest.raises(ConfigError, match=message):
        params_defaults.parse({"ratings": {key: value}})
