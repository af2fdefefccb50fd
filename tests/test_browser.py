"""The web page in a real browser: Debian's Chromium, headless, driven by Playwright, against a live server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import train_tiny_run
from seq2seq.serving.server import Limits, bind_socket, create_app, uvicorn_server

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory) -> Iterator[str]:
    """A tiny trained model served by uvicorn on a free loopback port, in a thread of this process."""
    folder = tmp_path_factory.mktemp("browser")
    run_dir = train_tiny_run(folder / "tiny", "decode.max_len=12")
    heads = train_tiny_run(folder / "heads", "decode.max_len=12", "model.decoder.attention=multihead",
                           "model.decoder.attention_heads=2")
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn_server(create_app([run_dir, heads], Limits(), device="cpu"), log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Debian's Chromium, never a downloaded one; --no-sandbox because tests may run as root.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server_url):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Console errors other than the browser's note on a 4xx answer: e.g. a request the CSP blocked.
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
    page.goto(server_url)
    page.wait_for_selector("#model option", state="attached")
    yield page
    context.close()
    assert errors == [], errors  # no script error and no blocked request


def source_weights(page) -> list[float]:
    return [float(token.get_attribute("data-weight") or 0) for token in page.locator(".source-tokens .tok").all()]


def test_generate_shows_output_nbest_and_linked_heatmap(page, tmp_path):
    page.fill("#source", "sort list `l` in reverse")
    page.select_option("#mode", "beam")
    page.fill("#beam", "3")
    page.fill("#nbest", "2")
    page.click("#generate")
    page.wait_for_selector(".result .heatmap")

    assert page.locator(".result h2").inner_text() == "sort list `l` in reverse"
    assert page.locator(".result .best .badge").first.inner_text() in ("parses", "syntax error")
    assert page.locator(".nbest .alternative").count() == 2
    assert page.locator(".source-tokens .tok").all_inner_texts() == ["sort", "list", "`", "l", "`", "in", "reverse"]
    outputs = page.locator(".output-tokens .tok")
    assert page.locator(".heatmap tbody tr").count() == outputs.count() >= 1

    assert sum(source_weights(page)) == 0  # nothing lit before any hover
    outputs.first.hover()
    lit = source_weights(page)
    assert sum(lit) == pytest.approx(1.0, abs=0.01)  # the hovered output token's attention row
    assert page.locator(".source-tokens .tok.lit").count() >= 1
    page.locator(".source-tokens .tok").last.hover()
    assert sum(source_weights(page)) == 0 and page.locator(".output-tokens .tok.lit").count() >= 1

    page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
    assert (tmp_path / "serve.png").stat().st_size > 10_000


def test_a_multi_head_model_shows_each_head(page):
    page.select_option("#model", "heads")
    page.fill("#source", "add 3 to total")
    page.click("#generate")
    page.wait_for_selector(".result .heatmap")
    buttons = page.locator(".heads .head")
    assert buttons.all_inner_texts() == ["mean of the heads", "head 1", "head 2"]
    assert buttons.first.get_attribute("aria-pressed") == "true"
    cells = lambda: [cell.get_attribute("style") for cell in page.locator(".heatmap td").all()]  # noqa: E731
    mean = cells()
    buttons.nth(2).click()
    assert page.locator(".result h3").inner_text() == "Attention: head 2 of 2"
    assert page.locator(".heads .head").nth(2).get_attribute("aria-pressed") == "true"
    assert cells() != mean  # head 2's own weights
    page.locator(".output-tokens .tok").first.hover()
    assert sum(source_weights(page)) == pytest.approx(1.0, abs=0.01)  # each head's row sums to 1 too
    page.locator(".heads .head").first.click()
    assert cells() == mean


def test_keyboard_only_use(page):
    page.fill("#source", "")
    page.focus("#source")
    page.keyboard.type("add 3 to total")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".result .heatmap")
    page.locator(".output-tokens .tok").first.focus()  # tokens are buttons: reachable with Tab
    assert sum(source_weights(page)) == pytest.approx(1.0, abs=0.01)
    page.focus("#source")
    page.keyboard.press("Control+End")
    page.keyboard.press("Shift+Enter")  # a new line, not a request
    assert page.input_value("#source") == "add 3 to total\n"


def test_errors_are_shown_and_sampling_options_appear(page):
    page.select_option("#mode", "sample")
    assert page.locator("#temperature").is_visible() and not page.locator("#beam").is_visible()
    page.select_option("#mode", "beam")
    page.fill("#beam", "2")
    page.fill("#nbest", "3")
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])")
    assert "nbest=3 cannot exceed beam=2" in page.locator("#error").inner_text()


def test_a_lone_surrogate_shows_the_servers_422(page):
    """A textarea can hold half a UTF-16 pair; JSON.stringify sends it as the escape "\\ud800",
    and the page shows the server's message naming the input and the character."""
    page.evaluate("document.getElementById('source').value = 'add \\ud800 3'")
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])")
    assert "inputs.0: the text holds an unpaired surrogate '\\ud800' at character 5" in page.locator("#error").inner_text()


def test_narrow_screen_has_no_horizontal_scroll(page):
    page.set_viewport_size({"width": 360, "height": 740})
    page.fill("#source", "check whether the string key starts with 'beta' or ends with 'dog'")
    page.click("#generate")
    page.wait_for_selector(".result .heatmap")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
