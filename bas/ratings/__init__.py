"""The human rating study of BaS appendix B.3: questions, a web app for raters, analysis.

`open_study(cfg)` gives the study database of a storage root, sampling its questions from
the runs the first time; `bas.ratings.app.create_app` serves it; `bas.ratings.analysis`
turns the exported ratings into table 4, the significance tests and the human Pareto plot.
"""

from __future__ import annotations

import logging

from bas import paths
from bas.config import Config
from bas.ratings.questions import find_methods, sample_questions
from bas.ratings.store import Study

log = logging.getLogger(__name__)


def study_spec(cfg: Config, methods: list[str]) -> dict:
    r = cfg.ratings
    return {"seed": r.seed, "num_prompt_questions": r.num_prompt_questions,
            "num_identity_questions": r.num_identity_questions, "methods": list(methods)}


def open_study(cfg: Config) -> Study:
    """The study of `cfg.paths.storage_root`; created from its runs if it does not exist yet.

    An existing study keeps its questions; it is refused if the sampling params changed.
    """
    r = cfg.ratings
    study = Study(paths.ratings_db(cfg), r.ratings_per_question, r.reservation_minutes, r.seed)
    methods = find_methods(paths.runs_dir(cfg), r.methods)
    spec = study_spec(cfg, methods)
    if Study.exists(study.db_path):
        study.check_spec(spec)
        return study
    questions = sample_questions(paths.storage_root(cfg), paths.runs_dir(cfg), paths.scenes_dir(cfg), methods,
                                 r.num_prompt_questions, r.num_identity_questions, r.seed)
    study.create(questions, spec)
    log.info("created the rating study %s: %d prompt and %d identity pages, methods %s",
             study.db_path, r.num_prompt_questions, r.num_identity_questions, ", ".join(methods))
    return study
