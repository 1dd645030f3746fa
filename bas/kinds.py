"""The kinds of method a run can be; the sandbox's references and the unavailable methods, which have no recipe.

- `method`: a method the report compares (BaS itself, the baselines' shapes aside);
- `ablation`: BaS with one part switched off (BaS sec. 5.2), kept off the Pareto front;
- `baseline`: a method BaS compares against (TI-m, DB-m, CD-m);
- `successor`: a later method on the same engine (PROTOCOL.md sec. 3);
- `reference`: the sandbox world's ground truth rendered into the grid (a ceiling or floor,
  `bas.sandbox.reference`), not a method: off the front and out of the tests.

Scores record their method's kind; a folder of images bas did not make (`bas score --images`)
is scored as `external`, and the report compares it like a method.
"""

from __future__ import annotations

KINDS = ("method", "ablation", "baseline", "successor", "reference")
EXTERNAL = "external"

GROUND_TRUTH = "ground_truth"
OTHER_IDENTITY = "other_identity"
# The references the sandbox can render; listed in `orchestration.methods` next to the methods.
REFERENCES = (GROUND_TRUTH, OTHER_IDENTITY)

# Methods that cannot run here, with the reason: naming one gives the reason, not "unknown method".
UNAVAILABLE = {
    "elite": (
        "ELITE (Wei et al. 2023) maps an image to word embeddings with encoders trained on "
        "Stable Diffusion 1.4; BaS ran the authors' code with their released encoder weights. "
        "Those weights are not part of this project and ELITE cannot be trained here from one "
        "image, so `elite` does not run (its published user-study scores are in the report)."
    ),
}
