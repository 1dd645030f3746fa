"""`bas sandbox check`: re-measure every committed sandbox model and compare with its record.

Each model directory under the sandbox weights (`models.sandbox_weights`) holds a
`training_record.json` whose `validity` figures were measured, when it was trained, from
the very weights that were saved. This recomputes them from the files:

- CLIP, DINO, segmenter, judge: fixed held-out sets, so only floating-point summation order
  (thread count, another CPU) can move a figure; a figure passes within
  `DETERMINISTIC_TOLERANCE` (0.01: a borderline item or two of a few hundred).
- the VAE's ceiling on text following (`vae_judged`): fixed held-out renders through the
  VAE, judged; deterministic like the scorers;
- the VAE's posterior noise (`vae_posterior`): per latent channel, its std against the spread
  of the posterior mean on held-out renders (`max_ratio` at most 0.05 for a usable VAE);
- the base model: `--samples` images per probe set (default `sandbox.validity_samples`),
  sampled and judged. Sampling on other hardware can change a sample, so the recorded and
  re-measured accuracies are treated as two binomial estimates: a figure passes within
  `Z` standard errors of their difference, sqrt(p(1-p) (1/n_check + 1/n_record)), with p the
  recorded accuracy smoothed as (k+1)/(n+2) so that p = 1 still has a spread. The check's
  probes are the first n of the record's, not independent draws, so this is conservative.

A record trained with another seed than `sandbox.seed` fails outright: the held-out sets,
and for DINO which identities are novel, follow the seed.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Optional

from bas.config import Config

# The sandbox's models and measures (torch, the trainers' modules) are imported by the functions that
# measure, each only what its model needs.

DETERMINISTIC_TOLERANCE = 0.01
Z = 3.0
BASE_ATTRIBUTE_SETS = ("seen", "novel")


@dataclasses.dataclass
class Row:
    model: str
    figure: str
    recorded: Optional[float]
    measured: Optional[float]
    tolerance: float

    @property
    def ok(self) -> bool:
        return (self.recorded is not None and self.measured is not None
                and abs(self.recorded - self.measured) <= self.tolerance + 1e-9)


def flatten(figures: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested figures as {'seen.shape': 0.97, ...} (booleans and strings left out)."""
    out = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def compare(model: str, recorded: dict, measured: dict,
            tolerance: Callable[[str, float], float]) -> list[Row]:
    """One row per measured figure; a figure the record lacks fails (recorded None)."""
    rec = flatten(recorded)
    return [Row(model, name, rec.get(name), value, tolerance(name, rec.get(name, value)))
            for name, value in flatten(measured).items()]


def binomial_tolerance(recorded: float, n_record: int, n_check: int, z: float = Z) -> float:
    """z standard errors of the difference of two accuracies estimated from n_record and n_check samples."""
    p = (recorded * n_record + 1) / (n_record + 2)
    return z * math.sqrt(p * (1 - p) * (1 / n_check + 1 / n_record))


def _measurers() -> dict[str, Callable[[Path, Config], dict]]:
    from bas.sandbox import classifiers, embedders

    return {"clip": embedders.measure_clip, "dino": embedders.measure_dino,
            "segmenter": classifiers.measure_segmenter, "judge": classifiers.measure_judge}


def check_all(cfg: Config, samples: Optional[int] = None) -> list[str]:
    """Re-measure every sandbox model under the weights directory; print a table; return failures."""
    from bas.models.registry import sandbox_weights_dir
    from bas.sandbox.stages import read_record

    root = sandbox_weights_dir(cfg.models)
    failures: list[str] = []
    rows: list[Row] = []
    for part, measure in _measurers().items():
        directory = root / part
        record = read_record(directory)
        if not _usable(part, directory, record, cfg, failures):
            continue
        rows += compare(part, record.get("validity", {}), measure(directory, cfg),
                        lambda _name, _value: DETERMINISTIC_TOLERANCE)
    record = read_record(root / "diffusion")
    if _usable("diffusion", root / "diffusion", record, cfg, failures):
        recorded = record.get("validity", {}).get("text_following")
        if recorded is None:
            failures.append(f"diffusion: {root / 'diffusion'} has no text_following figures "
                            "(run `bas sandbox train --only validity`)")
        elif (root / "judge").is_dir():
            rows += _check_base_model(cfg, root, recorded, samples)
            if "vae_posterior" in record["validity"]:
                rows += compare("diffusion", {"vae_posterior": record["validity"]["vae_posterior"]},
                                {"vae_posterior": measure_vae_posterior(root, cfg)},
                                lambda _name, _value: DETERMINISTIC_TOLERANCE)
            if "vae_judged" in record["validity"]:
                rows += compare("diffusion", {"vae_judged": record["validity"]["vae_judged"]},
                                {"vae_judged": measure_vae_judged(root, cfg)},
                                lambda _name, _value: DETERMINISTIC_TOLERANCE)
        else:
            failures.append(f"diffusion: text following needs the judge, and {root / 'judge'} does not exist")
    failures += [f"{r.model}: {r.figure} recorded {_show(r.recorded)}, measured {_show(r.measured)} "
                 f"(tolerance {r.tolerance:.3f})" for r in rows if not r.ok]
    print(format_table(rows))
    for failure in failures:
        print(f"FAIL {failure}")
    print(f"sandbox check: {len(rows)} figures, {len(failures)} failures ({root})")
    return failures


def _usable(part: str, directory: Path, record: dict, cfg: Config, failures: list[str]) -> bool:
    if not record:
        failures.append(f"{part}: no trained model in {directory} (train it with `bas sandbox train`)")
        return False
    if record.get("seed") != cfg.sandbox.seed:
        failures.append(f"{part}: trained with seed {record.get('seed')}, but params sandbox.seed is "
                        f"{cfg.sandbox.seed}: its held-out sets are not these")
        return False
    return True


def _check_base_model(cfg: Config, root: Path, recorded: dict, samples: Optional[int]) -> list[Row]:
    from bas.models.registry import load_diffusion
    from bas.sandbox.classifiers import Judge
    from bas.sandbox.validity import base_model_validity

    parts = load_diffusion(dataclasses.replace(cfg.models, profile="sandbox"))
    judge = Judge.load(root / "judge")
    measured = base_model_validity(parts, judge, cfg.sandbox, count=samples)
    n_record, n_check = int(recorded["samples"]), int(measured["samples"])
    kept = {k: measured[k] for k in BASE_ATTRIBUTE_SETS}
    return compare("diffusion", {k: recorded.get(k, {}) for k in BASE_ATTRIBUTE_SETS}, kept,
                   lambda _name, value: binomial_tolerance(value, n_record, n_check))


def _show(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(rows: list[Row]) -> str:
    header = f"{'model':<10} {'figure':<28} {'recorded':>9} {'measured':>9} {'tol':>6}  ok"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.model:<10} {r.figure:<28} {_show(r.recorded):>9} {_show(r.measured):>9} "
                     f"{r.tolerance:>6.3f}  {'yes' if r.ok else 'NO'}")
    return "\n".join(lines)


def measure_vae_judged(root: Path, cfg: Config) -> dict:
    """The judge's accuracy through the committed VAE (`bas.sandbox.validity.vae_judged`)."""
    from bas.models.registry import load_diffusion
    from bas.sandbox.classifiers import Judge
    from bas.sandbox.validity import vae_judged

    parts = load_diffusion(dataclasses.replace(cfg.models, profile="sandbox"))
    return vae_judged(parts.vae, Judge.load(root / "judge"), cfg.sandbox)


def measure_vae_posterior(root: Path, cfg: Config) -> dict:
    """The committed VAE's posterior noise per channel (`bas.sandbox.train_diffusion.posterior_spread`)."""
    from diffusers import AutoencoderKL

    from bas.sandbox.train_diffusion import posterior_spread

    vae = AutoencoderKL.from_pretrained(root / "diffusion" / "vae").float().eval()
    return posterior_spread(vae, cfg.sandbox)
