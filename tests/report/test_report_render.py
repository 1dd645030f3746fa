"""Open the HTML report in headless Chromium, offline, and screenshot it.

Proves the file renders on its own with its embedded plots: the screenshot must not be blank
and must show the plot colours (CSS never uses them). Chromium comes from Debian's `chromium`
package, installed by scripts/install-test-deps.sh (run by scripts/test.sh before pytest).
The screenshot is kept under test-artifacts/ for a human to look at.
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from bas.report import build_report
from tests import params_defaults

from report_fixtures import write_results

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
WIDTH, HEIGHT = 1280, 4000
PLOT_BLUE = (31, 119, 180)  # matplotlib tab:blue, the first method's colour (bas)
PLOT_GREEN = (44, 160, 44)  # tab:green (db_m)


def screenshot(html: Path, png: Path, profile_dir: Path) -> None:
    assert CHROMIUM.exists(), ("headless Chromium missing: run scripts/install-test-deps.sh "
                               "(installs Debian's chromium package)")
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={profile_dir}", f"--screenshot={png}",
               f"--window-size={WIDTH},{HEIGHT}", html.resolve().as_uri()]
    env = dict(os.environ, HOME=str(profile_dir))  # keep Chromium's caches out of the real home
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert png.exists(), f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"


def colour_pixels(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 30) -> int:
    distance = np.abs(pixels.astype(np.int32) - np.array(colour)).max(axis=-1)  # (H, W)
    return int((distance <= tolerance).sum())


def test_report_renders_offline_in_headless_chromium(tmp_path):
    results = write_results(tmp_path / "results")
    outputs = build_report(results, tmp_path / "out", params_defaults.report(bootstrap_samples=100))
    # Opened from a copy holding nothing but the HTML: nothing else may be needed.
    alone = tmp_path / "alone" / "report.html"
    alone.parent.mkdir()
    shutil.copy(outputs.html, alone)
    png = tmp_path / "screenshot.png"
    screenshot(alone, png, tmp_path / "chromium-profile")

    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(png, ARTIFACTS / "report_screenshot.png")
    image = Image.open(png).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    pixels = np.asarray(image)  # (H, W, 3)
    assert pixels.std() > 20, "screenshot is blank"
    assert (pixels.min(axis=-1) < 100).mean() > 0.01, "almost no dark pixels: no text rendered"
    # The Pareto and breakdown plots are near the top; their method colours must be on screen.
    assert colour_pixels(pixels, PLOT_BLUE) > 500, "embedded plots did not render"
    assert colour_pixels(pixels, PLOT_GREEN) > 200, "embedded plots did not render"
