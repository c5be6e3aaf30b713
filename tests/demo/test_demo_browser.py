"""The demo page (demo.py) in a real browser: Debian's headless Chromium driven by Selenium.

One demo process (random-weight checkpoints, CPU) on a free loopback port and one dev server
(the "endpoint" target). The browser uploads a person and a garment photo (the ordinary photos
of ../shared/data/photos when present, else the smoke run's photo and t-shirt), runs a try-on on
this machine, submits a garment file that is not an image and reads the worker's typed error
next to the garment, then runs the try-on again against the dev server with an API key typed in.
Screenshots of each step go to the test's tmp_path. A second test sends two requests at once
through Gradio's own client and gets both answers (the queue). Chromium and chromium-driver come
from apt (run.sh installs them as root); without them the tests skip, saying so.
"""
from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.helpers.dev_server import dev_server, free_port, served
from tests.helpers.shared_data import PHOTOS

pytestmark = pytest.mark.slow        # two server processes and a browser

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(requirements_demo.txt; ./run.sh installs it)")
pytest.importorskip("gradio", reason="gradio is not installed (requirements_demo.txt)")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

import demo  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NO_BROWSER = (f"no headless browser: {CHROMIUM} and {CHROMEDRIVER} are needed (Debian: apt-get "
              "install chromium chromium-driver; ./run.sh does it when run as root)")
#: Headless in a closed network: without the background-networking flags Chromium's own
#: services (updates, sync, field trials) try the network and its connections are refused.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1400,1800")
START_TIMEOUT_S = 180
RESULT_TIMEOUT_S = 180
#: A made-up key typed into the page: it must appear in no log and nowhere on the page.
API_KEY = "rpa_DEMO-TEST-KEY-not-a-real-one-0123456789"


def photos(tmp_path: Path) -> tuple[Path, Path]:
    """(person, garment) files: ordinary photos from ../shared when present, else drawn ones."""
    person, cloth = PHOTOS / "person" / "05997_00.jpg", PHOTOS / "cloth" / "00055_00.jpg"
    if person.is_file() and cloth.is_file():
        return person, cloth
    from worker import sample_images
    p, c = sample_images.request_images()
    p.save(tmp_path / "person.png")
    c.save(tmp_path / "cloth.png")
    return tmp_path / "person.png", tmp_path / "cloth.png"


@pytest.fixture(scope="module")
def page(random_ckpt_dir, tmp_path_factory):
    """(URL, log path) of one demo process on a free loopback port, with random weights."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(NO_BROWSER)
    log_path = tmp_path_factory.mktemp("demo") / "demo.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update(CHECKPOINT_DIR=str(random_ckpt_dir), DEVICE="cpu", WARMUP="0")
    url = f"http://127.0.0.1:{port}/"
    with served([sys.executable, "demo.py", "--host", "127.0.0.1", "--port", str(port)], env,
                log_path, url, "demo"):
        yield url, log_path


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def settled(driver, timeout_s: float) -> WebDriverWait:
    """A wait that polls through Gradio's re-renders: an element replaced between being found
    and being read (StaleElementReferenceException) is looked up again at the next poll."""
    return WebDriverWait(driver, timeout_s, ignored_exceptions=(StaleElementReferenceException,))


def upload(driver, elem_id: str, path: Path) -> None:
    """Put ``path`` into the photo input ``elem_id`` (removing the photo already there)."""
    for button in driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} button[aria-label='Remove Image']"):
        button.click()
    settled(driver, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, f"#{elem_id} input[type=file]"))
    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))
    settled(driver, 30).until(lambda d: any(
        "gradio_api/file=" in (img.get_attribute("src") or "")
        for img in d.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")))


def shown_errors(driver) -> dict:
    """{slot: text} of the error boxes on the page."""
    out = {}
    for slot in demo.SLOTS:
        for box in driver.find_elements(By.CSS_SELECTOR, f"#error-{slot}"):
            if box.is_displayed() and box.text.strip():
                out[slot] = box.text.strip()
    return out


def run_and_wait(driver, where: str):
    """Click "Try on"; wait for the result of a run on ``where`` (the info line names it) or an
    error box. Returns (result image URL, errors). (The URL alone would not do: a second run with
    the same inputs and weights gives the same file, which Gradio serves under the same name.)"""
    errors_before = shown_errors(driver)
    driver.find_element(By.CSS_SELECTOR, "#run").click()
    if errors_before:       # the last run's errors go at the click (a new error may come at once)
        settled(driver, 30).until(lambda d: not shown_errors(d))

    def finished(d):
        errors = shown_errors(d)
        if errors:
            return None, errors
        if f"({where})" not in d.find_element(By.CSS_SELECTOR, "#info").text:
            return False
        for img in d.find_elements(By.CSS_SELECTOR, "#result img"):
            src = img.get_attribute("src") or ""
            if "gradio_api/file=" in src and img.get_attribute("naturalWidth") != "0":
                return src, {}
        return False
    return settled(driver, RESULT_TIMEOUT_S).until(finished)


def check_result(driver, src: str, person: Path, shot: Path) -> Image.Image:
    """The result at the person photo's size, random weights said on the page and in the image."""
    result = Image.open(io.BytesIO(requests.get(src, timeout=30).content)).convert("RGB")
    assert result.size == Image.open(person).size
    top = result.getpixel((2, 2))
    assert top[0] > 150 and top[1] < 40 and top[2] < 80, top       # the drawn red band
    banner = driver.find_element(By.CSS_SELECTOR, "#random-weights-banner")
    assert banner.is_displayed() and demo.RANDOM_WEIGHTS_TEXT in banner.text
    assert len(driver.find_elements(By.CSS_SELECTOR, "#intermediates img")) >= len(demo.CAPTIONS)
    info = driver.find_element(By.CSS_SELECTOR, "#info").text
    assert "gmm_sha256" in info and "total" in info
    driver.execute_script("arguments[0].scrollIntoView();", banner)
    driver.save_screenshot(str(shot))
    return result


def test_try_on_in_the_browser_on_this_machine_and_an_endpoint(page, browser, tmp_path,
                                                               random_ckpt_dir):
    url, log_path = page
    person, cloth = photos(tmp_path)
    with dev_server(random_ckpt_dir, tmp_path / "dev_server.log") as (base, _proc):
        browser.get(url)
        upload(browser, "person_image", person)
        upload(browser, "cloth_image", cloth)
        src, errors = run_and_wait(browser, demo.THIS_MACHINE)
        assert not errors, errors
        check_result(browser, src, person, tmp_path / "1-this-machine.png")
        assert "backend" in browser.find_element(By.CSS_SELECTOR, "#info").text

        bad = tmp_path / "not-an-image.jpg"
        bad.write_text("this is text, not a photo")
        upload(browser, "cloth_image", bad)
        _, errors = run_and_wait(browser, demo.THIS_MACHINE)
        assert errors == {"cloth_image": "INVALID_IMAGE: cloth_image: not a decodable image"}
        assert not any(b.is_displayed() for b in browser.find_elements(
            By.CSS_SELECTOR, "#random-weights-banner"))
        browser.save_screenshot(str(tmp_path / "2-typed-error.png"))

        upload(browser, "cloth_image", cloth)            # the page keeps working
        browser.find_element(By.CSS_SELECTOR, f"#target input[value='{demo.ENDPOINT}']").click()
        browser.find_element(By.CSS_SELECTOR, "#endpoint textarea").send_keys(base)
        browser.find_element(By.CSS_SELECTOR, "#api_key input").send_keys(API_KEY)
        src, errors = run_and_wait(browser, "endpoint")
        assert not errors, errors
        check_result(browser, src, person, tmp_path / "3-endpoint.png")
        page_source = browser.page_source
        server_log = (tmp_path / "dev_server.log").read_text()
    demo_log = log_path.read_text()
    assert API_KEY not in demo_log and API_KEY not in server_log
    assert API_KEY not in page_source.replace(f'value="{API_KEY}"', "")   # only in its own box
    assert "Traceback" not in demo_log and "Traceback" not in page_source
    assert '"error_codes":["INVALID_IMAGE"]' in demo_log                # the worker's job line


def test_a_second_request_while_one_runs_is_queued_not_lost(page, tmp_path):
    from gradio_client import Client, handle_file

    from worker import sample_images
    person, cloth = sample_images.request_images()
    person.save(tmp_path / "person.png")
    cloth.save(tmp_path / "cloth.png")
    client = Client(page[0], verbose=False)
    args = dict(target_name=demo.THIS_MACHINE, endpoint_text="", key="",
                person_path=handle_file(str(tmp_path / "person.png")),
                cloth_path=handle_file(str(tmp_path / "cloth.png")))
    jobs = [client.submit(*args.values(), None, None, None, None, "jpeg", 80, "model", "full",
                          False, api_name="/try_on") for _ in range(2)]
    results = [job.result(timeout=RESULT_TIMEOUT_S) for job in jobs]
    for result in results:
        assert Image.open(result[1]).size == (192, 256)       # output_size model, both answered
