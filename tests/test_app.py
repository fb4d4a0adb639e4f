"""The web page in a real headless browser (Debian's chromium, driven by playwright): move the temperature slider and
generate, paint a mask and inpaint, upload a CSV and read the scores; a bad upload is a message on the page and the
server keeps serving. With DIFFUSEKIT_SCREENSHOTS=DIR each tab's screenshot is written there (docs/screenshots)."""
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from test_service import models, serving, text_models  # noqa: F401 (tiny runs and detectors; the loopback server)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; "
                                                         ".ci/run installs it)")
SHOTS = os.environ.get("DIFFUSEKIT_SCREENSHOTS")
TIMEOUT = 120_000  # ms: a first call loads the model's code paths on 2 slow cores


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = []
    page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else outside.append(r.url))
    page.goto(url + "/ui/")
    page.get_by_role("tab").first.wait_for(timeout=TIMEOUT)
    return page, outside


def shot(page, name):
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def test_generate_with_the_temperature_slider(models, browser):  # noqa: F811
    run = models[0]
    with serving(run) as url:
        page, outside = open_page(browser, url)
        page.locator("#temperature input[type=range]").fill("0.5")
        page.locator("#generate").click()
        page.locator("#samples img").nth(15).wait_for(timeout=TIMEOUT)
        link = page.locator("a[href*='samples.npz']").first
        link.wait_for(timeout=TIMEOUT)
        shot(page, "generate")
        npz = httpx.get(url + link.get_attribute("href") if link.get_attribute("href").startswith("/")
                        else link.get_attribute("href"), timeout=60)
        with np.load(__import__("io").BytesIO(npz.content)) as f:
            got = f["arr_0"]
        assert np.array_equal(got, run.sample(16, seed=0, temperature=0.5))  # the slider's value reached the call
        assert outside == []  # nothing fetched from elsewhere


def paint_a_stroke(page, box):
    """A mouse stroke across the middle of the editor, where the image sits, slowly enough for it to see each move."""
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 30, cy)
    page.mouse.down()
    for i in range(13):
        page.mouse.move(cx - 30 + 5 * i, cy)
        page.wait_for_timeout(60)
    page.mouse.up()


def test_paint_a_mask_and_inpaint(models, browser, tmp_path):  # noqa: F811
    run, *_, images = models
    Image.fromarray(images[3]).save(tmp_path / "digit.png")
    with serving(run) as url:
        page, _ = open_page(browser, url)
        page.get_by_role("tab", name="Restore").click()
        page.locator("#restore-input").get_by_text("Upload an image").wait_for(timeout=TIMEOUT)
        upload = lambda: page.locator("#restore-input input[type=file]").set_input_files(  # noqa: E731
            str(tmp_path / "digit.png"))
        upload()
        canvas = page.locator("#restore-input canvas").first
        canvas.wait_for(timeout=TIMEOUT)
        done = page.locator("#restorations img").nth(3)
        no_image = page.get_by_text("upload an image to restore")
        refused = page.get_by_text("paint the region to fill on the image first").or_(no_image)
        for attempt in range(6):  # the editor may not have taken the upload yet when the first stroke comes
            page.wait_for_timeout(3000)
            paint_a_stroke(page, canvas.bounding_box())
            page.locator("#restore").click()
            done.or_(refused).first.wait_for(timeout=TIMEOUT)
            if done.is_visible():
                break
            if no_image.first.is_visible():  # the editor missed the file: give it again
                upload()
            refused.first.wait_for(state="hidden", timeout=TIMEOUT)
        assert done.is_visible(), page.locator("body").inner_text()[-600:]
        assert "consistency" in page.locator("#restore-metrics").inner_text()
        shot(page, "restore")


def test_upload_a_csv_and_read_the_scores(models, browser, tmp_path):  # noqa: F811
    _, det, df, target, _ = models
    df.assign(anomaly=(target == 2).astype(int)).to_csv(tmp_path / "labelled.csv", index=False)
    df.iloc[:, 1:].to_csv(tmp_path / "wrong.csv", index=False)
    with serving(det) as url:
        page, _ = open_page(browser, url)
        page.get_by_role("tab", name="Anomaly").click()
        page.get_by_label("false-positive rate").first.fill("0.1")
        # a bad upload: the library's one-line message on the page
        page.locator("#score-input input[type=file]").set_input_files(str(tmp_path / "wrong.csv"))
        page.locator("#score").click()
        page.get_by_text("columns differ").first.wait_for(timeout=TIMEOUT)
        page.locator("#score-input button[aria-label='Clear']").click()
        page.locator("#score-input input[type=file]").set_input_files(str(tmp_path / "labelled.csv"))
        page.get_by_label("label column (1 = anomaly; optional: ROC curve)").fill("anomaly")
        page.locator("#score").click()
        page.get_by_text("AUROC").first.wait_for(timeout=TIMEOUT)
        summary = page.locator("#score-summary").inner_text()
        want = det.report(tmp_path / "labelled.csv", label_column="anomaly", fpr=0.1).summary
        assert f"AUROC {want['auroc']:.4f}" in summary
        assert "p_value" in page.locator("#score-table").inner_text()
        shot(page, "anomaly")
        assert httpx.get(url + "/health").status_code == 200


def test_likelihood_of_uploaded_images(models, browser, tmp_path):  # noqa: F811
    run, *_, images = models
    np.savez(tmp_path / "x.npz", images[:3])
    with serving(run) as url:
        page, _ = open_page(browser, url)
        page.get_by_role("tab", name="Likelihood").click()
        page.locator("#nll-input input[type=file]").set_input_files(str(tmp_path / "x.npz"))
        page.get_by_label("elbo").check()
        page.locator("#nll").click()
        page.get_by_text("bits_per_dim").first.wait_for(timeout=TIMEOUT)
        want = run.nll(images[:3], method="elbo").bits_per_dim
        assert f"{want[0]:.4f}"[:5] in page.locator("#nll-table").inner_text()
        shot(page, "likelihood")


def test_text_page_generates_fills_and_scores_lines(text_models, browser):  # noqa: F811
    run, det = text_models
    with serving(run) as url:
        page, outside = open_page(browser, url)
        page.locator("#temperature input[type=range]").fill("0.5")
        page.locator("#generate").click()
        samples = page.locator("#samples textarea")
        page.wait_for_function("e => e.value.length > 0", arg=samples.element_handle(), timeout=TIMEOUT)
        assert samples.input_value().split("\n") == run.sample(16, seed=0, temperature=0.5)
        shot(page, "text-generate")
        page.get_by_role("tab", name="Infill").click()
        page.locator("#infill").click()  # nothing typed: the message on the page
        page.get_by_text("type the text to fill first").first.wait_for(timeout=TIMEOUT)
        page.locator("#infill-input textarea").fill("the c_t sat on t\nhe ___ and the d")
        page.locator("#infill").click()
        filled = page.locator("#filled textarea")
        page.wait_for_function("e => e.value.length > 0", arg=filled.element_handle(), timeout=TIMEOUT)
        assert filled.input_value().split("\n") == run.infill(["the c_t sat on t", "he ___ and the d"], temperature=0)
        page.get_by_role("tab", name="Likelihood").click()
        page.locator("#nll-input textarea").fill("the cat sat on the mat and the dog")  # two windows of 16
        page.locator("#nll").click()
        page.get_by_text("bits_per_character").first.wait_for(timeout=TIMEOUT)
        want = run.nll(["the cat sat on t", "he mat and the d"], method="elbo").bits_per_dim
        assert f"{want[1]:.4f}"[:5] in page.locator("#nll-table").inner_text()
        assert outside == []
    with serving(det) as url:
        page, _ = open_page(browser, url)
        page.get_by_role("tab", name="Anomaly").click()
        page.locator("#score-input textarea").fill("GET /a 200\nGET /a?id=1 OR 1=1 200")
        page.locator("#score").click()
        page.get_by_text("least_expected").first.wait_for(timeout=TIMEOUT)
        table = page.locator("#score-table").inner_text()
        assert "'?'" in table and "flagged at false-positive rate" in page.locator("#score-summary").inner_text()
        shot(page, "text-anomaly")
