"""demo.py end to end in a real headless browser: the system Chromium driven by the system chromedriver through
Selenium (never Selenium Manager, which would download one). The demo runs on a free localhost port with the tiny
Ovis 1.6 fixture; the test uploads an image, asks a question, waits for the streamed answer, asks a follow-up, and
checks both answers are the model's greedy answers for that conversation. Skipped, with the reason, when no browser
or driver is installed (CI installs them: `apt-get install chromium chromium-driver`)."""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import FIXTURE, REPO

CHROMIUM = next(filter(None, (os.environ.get("CHROMIUM_BINARY"), shutil.which("chromium"),
                              shutil.which("chromium-browser"))), None)
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
MAX_NEW_TOKENS = 8

MISSING = [name for name in ("gradio", "selenium") if importlib.util.find_spec(name) is None]

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="no Chromium and chromedriver installed (apt-get install chromium chromium-driver)"),
    pytest.mark.skipif(bool(MISSING), reason=f"{MISSING} not installed (pip install -e '.[demo]')"),
    pytest.mark.slow,
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(url: str, server: subprocess.Popen, log_path, deadline_s: float = 120) -> None:
    """Polls the page until it answers; fails at once with the server's log if the server died."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"demo.py exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet
            time.sleep(0.2)
    pytest.fail(f"demo.py did not serve {url} within {deadline_s} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture
def demo_url(tmp_path):
    """demo.py serving the tiny fixture on a free port; the whole process group is killed afterwards, always."""
    port = _free_port()
    log_path = tmp_path / "demo.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "GRADIO_TEMP_DIR": str(tmp_path / "uploads")}
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "demo.py", f"checkpoint={FIXTURE / 'checkpoint'}", f"port={port}", "device=cpu",
             f"max_new_tokens={MAX_NEW_TOKENS}", f"hydra.run.dir={tmp_path / 'hydra'}"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}/", server, log_path
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager, were it ever reached, must not download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1600", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _shown(text: str) -> str:
    """Text as the page shows it (whitespace runs collapse)."""
    return " ".join(text.split())


def test_demo_answers_in_a_real_browser(demo_url, browser, tmp_path):
    from PIL import Image
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from ovis_lit.chat.session import ChatSession, Decoding
    from ovis_lit.evaluation.loading import load_for_eval

    url, server, log_path = demo_url
    image_path = tmp_path / "red.png"
    Image.new("RGB", (40, 24), (200, 30, 30)).save(image_path)
    # the expected answers, computed here while the server starts: the same conversation through a ChatSession
    model, processor, _ = load_for_eval(FIXTURE / "checkpoint")
    session = ChatSession(model, processor, Decoding(max_new_tokens=MAX_NEW_TOKENS))
    first = session.ask("What colour is it?", [Image.open(image_path).convert("RGB")])
    second = session.ask("And its shape?")
    assert first and second and first != second

    _wait_until_serving(url, server, log_path)
    browser.get(url)
    wait = WebDriverWait(browser, 60)

    def send(text: str) -> None:
        box = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "textarea[data-testid=textbox]")))
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def answers_shown(count: int):
        def shown(driver):
            bots = driver.find_elements(By.CSS_SELECTOR, "[data-testid=bot]")
            return [_shown(b.text) for b in bots] if len(bots) >= count else False
        return shown

    send("<image> <image>")  # two image marks and no image: refused with a warning, and the chat goes on
    wait.until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, "[data-testid=toast-body]"),
                                                   "cannot answer this message: the message has 2 <image> marks"))
    upload = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
    upload.send_keys(str(image_path))
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "img[src*='red.png']")))  # the upload is attached
    def wait_for_answers(*expected: str) -> None:
        try:
            wait.until(lambda d: answers_shown(len(expected))(d) == [_shown(e) for e in expected])
        except TimeoutException:
            pytest.fail(f"the page shows {answers_shown(0)(browser)}, expected {[_shown(e) for e in expected]}; "
                        f"server log:\n{log_path.read_text()[-3000:]}")

    send("What colour is it?")
    wait_for_answers(first)  # streamed: the final text is the whole greedy answer
    send("And its shape?")
    wait_for_answers(first, second)  # the follow-up was answered after the first turn, image included
    assert "Traceback" not in log_path.read_text()
    # the page fetched nothing from anywhere but the demo itself (no fonts, scripts or analytics from the internet)
    requested = {json.loads(entry["message"])["message"].get("params", {}).get("request", {}).get("url", "")
                 for entry in browser.get_log("performance")}
    elsewhere = {u for u in requested if u and not u.startswith((url, "data:", "blob:"))}
    assert len(requested) > 5 and not elsewhere, elsewhere
