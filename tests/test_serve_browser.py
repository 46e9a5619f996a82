"""End to end: ``python -m dmireid serve`` in a subprocess on 127.0.0.1, driven by headless Chromium
(Selenium): pick a query, read the ranked gallery from the page, add the query, drop it again.

Skips, saying why, only where no Chromium or chromedriver can be found (``.ci/run`` installs them
from the distribution's packages). Saves a screenshot under the pytest tmp dir and, when
``DMIREID_SCREENSHOT_DIR`` is set, there too (synthetic images only).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the serve extra (pip install dmireid[serve]) is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from serve_fixtures import build_gallery, make_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver", "/usr/lib/chromium-browser/chromedriver")


def find_chromium() -> tuple[str, str]:
    """(browser, driver) executables, or skip saying which is missing."""
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = next((shutil.which(d) for d in DRIVERS if shutil.which(d)), None)
    if browser is None or driver is None:
        missing = " and ".join(n for n, v in (("Chromium", browser), ("chromedriver", driver)) if v is None)
        pytest.skip(f"no {missing} on this machine (apt-get install chromium chromium-driver)")
    return browser, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with status {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the server did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(tmp_path, synthetic_people):
    """A real index of the synthetic gallery, what it answers for the query (asked in-process), and the
    server on a free port; the index's threshold is half the query's nearest distance."""
    checkpoint = make_checkpoint(tmp_path / "ckpt.pt", sorted((synthetic_people / "bounding_box_train").glob("*.jpg")))
    index_dir = tmp_path / "gallery"
    index = build_gallery(index_dir, sorted((synthetic_people / "bounding_box_test").glob("*.jpg")), checkpoint)
    query = str(sorted((synthetic_people / "query").glob("*.jpg"))[0])
    hits = index.search([query], topk=8)[0]
    expected = {"count": index.info()["count"], "ids": [h.id for h in hits], "distances": [h.distance for h in hits]}
    index.set_threshold(hits[0].distance / 2)                                 # stored in index.json
    port, log = free_port(), tmp_path / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dmireid", "serve", str(index_dir), "--port", str(port),
                                 "--topk", "8", "--device", "cpu"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_server(url, proc, log)
        yield url, index_dir, (query, expected), log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser(tmp_path):
    binary, driver_path = find_chromium()
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path, log_output=str(tmp_path / "driver.log")))
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def after(driver, action) -> None:
    """Run ``action`` (which loads a new page) and wait until that page is loaded."""
    old = driver.find_element(By.TAG_NAME, "html")
    action()
    WebDriverWait(driver, 120).until(EC.staleness_of(old))
    WebDriverWait(driver, 120).until(lambda d: d.execute_script("return document.readyState") == "complete")


def read_results(driver) -> tuple[str, list[tuple[int, float, str]]]:
    """The verdict and the (id, distance, match) of each ranked crop, once every crop image has loaded."""
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#hits img')].every(i => i.complete && i.naturalWidth > 0)"))
    verdict = driver.find_element(By.ID, "verdict").get_attribute("data-verdict")
    hits = [(int(li.get_attribute("data-id")), float(li.get_attribute("data-distance")), li.get_attribute("data-match"))
            for li in driver.find_elements(By.CSS_SELECTOR, "#hits li.hit")]
    return verdict, hits


DROP = """
const [src, done] = arguments;
fetch(src).then(r => r.blob()).then(blob => {
  const dt = new DataTransfer();
  dt.items.add(new File([blob], 'dropped.png', {type: blob.type}));
  document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
  done(true);
});
"""


@pytest.fixture(scope="module")
def synthetic_people(tmp_path_factory):
    """A few synthetic people at 128×64 (a readable screenshot): about 40 gallery crops, 11 queries."""
    from dmireid.data import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("people") / "synth", num_ids=10, num_cameras=4, seed=0,
                          height=128, width=64)


def test_search_add_and_search_again_in_a_real_browser(server, browser, tmp_path):
    url, index_dir, (query_path, expected), log = server
    browser.get(url)
    assert browser.find_element(By.ID, "gallery-count").text == str(expected["count"])

    # pick a query: the file input submits the form on change
    after(browser, lambda: browser.find_element(By.ID, "image").send_keys(query_path))
    verdict, hits = read_results(browser)
    assert verdict == "unknown" and len(hits) == 8
    assert [h[0] for h in hits] == expected["ids"]                       # the index, asked in-process
    assert max(abs(h[1] - d) for h, d in zip(hits, expected["distances"])) < 1e-4
    assert all(m == "false" for _, _, m in hits)

    # add it to the gallery: the page shows it first, at distance ~0, as a match
    after(browser, lambda: browser.find_element(By.ID, "add").click())
    assert "added to the gallery" in browser.find_element(By.ID, "notice").text
    assert browser.find_element(By.ID, "gallery-count").text == str(expected["count"] + 1)
    saved = sorted((index_dir / "uploads").glob("*.png"))
    assert len(saved) == 1

    # search again, this time dropping the saved crop on the drop zone
    added_id = read_results(browser)[1][0][0]
    after(browser, lambda: browser.execute_async_script(DROP, f"/image/{added_id}"))
    verdict, hits = read_results(browser)
    assert verdict == "match" and hits[0][0] == added_id and abs(hits[0][1]) < 1e-4 and hits[0][2] == "true"
    assert [h[0] for h in hits[1:]] == expected["ids"][:7]
    height, chrome = browser.execute_script("return [document.documentElement.scrollHeight, "
                                            "window.outerHeight - window.innerHeight]")
    browser.set_window_size(1280, height + chrome)                        # the whole page, no scrolling
    shots = [tmp_path / "serve_page.png"]
    if os.environ.get("DMIREID_SCREENSHOT_DIR"):
        shots.append(Path(os.environ["DMIREID_SCREENSHOT_DIR"]) / "serve_page.png")
    for shot in shots:
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    # a file that is not an image: a clear error on the page, and the server keeps serving
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    after(browser, lambda: browser.find_element(By.ID, "image").send_keys(str(bogus)))
    error = browser.find_element(By.ID, "error")
    assert error.get_attribute("data-status") == "400" and "not an image" in error.text
    browser.get(url)
    assert browser.find_element(By.ID, "gallery-count").text == str(expected["count"] + 1)
    assert "on 127.0.0.1 only" in log.read_text()
