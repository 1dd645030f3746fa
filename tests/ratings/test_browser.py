"""A real browser rates both page types: headless Chromium, driven over WebDriver, opens the
pages of a live `bas rate serve`, moves the sliders, submits, and the ratings are in the
database. Screenshots of both pages go to test-artifacts/ and must show the images.

Needs Debian's chromium and chromium-driver (scripts/install-test-deps.sh installs them).
"""

import io
import shutil
import signal
import sqlite3

import numpy as np
import pytest
from PIL import Image

from bas.ratings import open_study
from bas.scenes.masking import masked_concept
from ratings_helpers import REPO, free_port, make_config, wait_for_http
from webdriver_client import ARROW_LEFT, ARROW_RIGHT, Browser, start_chromedriver

ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
def browser(tmp_path):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail("chromium and chromedriver are needed: run scripts/install-test-deps.sh")
    port = free_port()
    driver = start_chromedriver(chromedriver, port, tmp_path / "chromedriver.log")
    session = None
    try:
        wait_for_http(f"http://127.0.0.1:{port}/status", driver, timeout=60)
        session = Browser(f"http://127.0.0.1:{port}", chromium, tmp_path / "chromium-profile")
        yield session
    finally:
        if session is not None:
            session.quit()
        driver.send_signal(signal.SIGTERM)
        try:
            driver.wait(timeout=20)
        except Exception:
            driver.kill()
            driver.wait(timeout=20)


def _images_loaded(browser: Browser) -> bool:
    return browser.wait_until(
        "const imgs = Array.from(document.images);"
        "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);")


def _dominant_colour(path) -> np.ndarray:
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    return colours[counts.argmax()].astype(int)


def _check_screenshot(png: bytes, name: str, shown_images: list) -> None:
    """Save the screenshot as a test artifact; it must not be blank and must show each image."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_bytes(png)
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)  # (H, W, 3)
    assert shot.shape[0] >= 600 and shot.shape[1] >= 800
    assert shot.std() > 20  # not one flat colour
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 200
    for path in shown_images:  # each image's main colour covers a good patch of the screen
        close = np.abs(shot - _dominant_colour(path)).sum(axis=2) <= 12
        assert close.sum() > 5000, f"{path.name} is not visible in {name}"


def _stored(db, label: str, question: str) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute(
            "SELECT i.public_id, r.rating FROM ratings r JOIN raters rt ON rt.id = r.rater_id"
            " JOIN items i ON i.id = r.item_id JOIN questions q ON q.id = r.question_id"
            " WHERE rt.label = ? AND q.public_id = ?", (label, question)).fetchall())


def _move_sliders(browser: Browser, targets: list[int]) -> dict[str, int]:
    """Move each slider (they start at 3) to its target with the arrow keys, as a user would."""
    sliders = browser.find_all("input[type=range]")
    assert len(sliders) == len(targets)
    chosen = {}
    for slider, target in zip(sliders, targets):
        start = int(browser.prop(slider, "value"))
        keys = ARROW_RIGHT * (target - start) if target > start else ARROW_LEFT * (start - target)
        if target == start:  # still move it, so it counts as touched: away and back
            keys = ARROW_RIGHT + ARROW_LEFT if target < 5 else ARROW_LEFT + ARROW_RIGHT
        browser.send_keys(slider, keys)
        assert int(browser.prop(slider, "value")) == target
        chosen[browser.attr(slider, "name").removeprefix("rating_")] = target
    # Each slider's read-out shows its value.
    outputs = [browser.text(o) for o in browser.find_all(".rating output")]
    assert outputs == [str(t) for t in targets]
    return chosen


def test_a_rater_rates_both_page_types_in_chromium(storage_root, live_server, browser, tmp_path):
    study = open_study(make_config(storage_root))  # the same params the live server uses
    (label, token), = study.add_raters(1)
    base, _ = live_server(storage_root)

    # Prompt page: all methods' images for one prompt, a slider each.
    browser.get(f"{base}/r/{token}/prompt")
    _images_loaded(browser)
    assert len(browser.find_all('[data-kind="prompt-image"] img')) == 3
    instruction = browser.text(browser.find(".instruction"))
    assert instruction.startswith("For each of the following images, please rank on a scale of 1 to 5 its "
                                  "correspondence to this text description:")
    question = browser.prop(browser.find('input[name="question"]'), "value")
    chosen = _move_sliders(browser, [5, 1, 3])
    _check_screenshot(browser.screenshot_png(), "ratings-prompt-page.png",
                      [storage_root / study.item_image(item) for item in chosen])
    browser.click(browser.find('button[type="submit"]'))
    browser.wait_until(f"return !document.body.innerHTML.includes('{question}')")
    assert _stored(study.db_path, label, question) == chosen

    # Identity page: masked object | generated image pairs. Submitting before every slider
    # was moved is stopped in the page; nothing is stored.
    browser.get(f"{base}/r/{token}/identity")
    _images_loaded(browser)
    assert len(browser.find_all('[data-kind="identity-pair"] img')) == 6
    question = browser.prop(browser.find('input[name="question"]'), "value")
    browser.click(browser.find('button[type="submit"]'))
    assert "Please set a rating for every image (3 left" in browser.text(browser.find("#hint"))
    assert _stored(study.db_path, label, question) == {}
    chosen = _move_sliders(browser, [2, 4, 5])
    assert browser.text(browser.find("#hint")) == ""  # the reminder goes once all are set
    scene_id, concept = study.identity_concept(question)
    masked = masked_concept(Image.open(storage_root / "scenes" / scene_id / "image.png"),
                            Image.open(storage_root / "scenes" / scene_id / f"mask_{concept}.png"))
    masked.save(tmp_path / "masked.png")
    _check_screenshot(browser.screenshot_png(), "ratings-identity-page.png",
                      [tmp_path / "masked.png"] + [storage_root / study.item_image(item) for item in chosen])
    browser.click(browser.find('button[type="submit"]'))
    browser.wait_until(f"return !document.body.innerHTML.includes('{question}')")
    assert _stored(study.db_path, label, question) == chosen
    assert browser.url().endswith(f"/r/{token}/identity")  # on to the next page
