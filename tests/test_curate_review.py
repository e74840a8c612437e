"""The HRE review page in a real browser: ``python -m model.data.curate review`` in a
subprocess, driven by Debian's chromium through Playwright with the keyboard
shortcuts (a = accept, Ctrl+Enter = save edit, r = reject) and a mouse click; then the
page is restarted and the reviewer resumes where they stopped.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from model.data.curate.review_pool import read_decisions
from tests.locks import hold_lock
from tests.media import cached_clip
from tests.test_app_server import CHROMIUM, serve_page, stop
from tests.test_curate_hre import CANDIDATES, make_review_pool

ROOT = Path(__file__).resolve().parents[1]
STEP_TIMEOUT_MS = 20_000  # ms for one decision to show the next clip


def start_review(cand: Path, reviewer: str, log: Path) -> tuple[subprocess.Popen, str]:
    return serve_page([sys.executable, "-m", "model.data.curate", "review", str(cand), "--reviewer", reviewer],
                      log, ROOT, dict(os.environ))


def wait_progress(page, text: str) -> None:
    page.locator("#review-progress").get_by_text(text).wait_for(timeout=STEP_TIMEOUT_MS)


def shown_explanation(page) -> str:
    return page.locator("#review-explanation textarea").input_value()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("review")
    return make_review_pool(tmp / "cand", cached_clip("review", seconds=2.0, fps=10)["path"])


def test_review_page_accept_edit_reject_then_resume(pool, tmp_path):
    from playwright.sync_api import sync_playwright

    n = len(CANDIDATES)
    log = pool / "reviews" / "alice.jsonl"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        try:
            proc, url = start_review(pool, "alice", tmp_path / "review1.log")
            assert url.startswith("http://127.0.0.1:")
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 1100})
                page.goto(url, wait_until="load")
                wait_progress(page, f"0/{n} reviewed")
                assert shown_explanation(page) == CANDIDATES[0][1]
                assert page.locator("#review-labels input, #review-labels textarea").first.input_value() == \
                    ", ".join(CANDIDATES[0][2])
                assert "scene of dfew/001" in page.locator("#review-cues").inner_text()
                src = page.locator("#review-video video").get_attribute("src", timeout=STEP_TIMEOUT_MS)
                with urllib.request.urlopen(src if src.startswith("http") else url.rstrip("/") + src) as r:
                    assert r.status == 200 and len(r.read()) > 1000  # the clip is served

                page.locator("#review-progress").click()  # focus the page, not a text box
                page.keyboard.press("a")  # accept
                wait_progress(page, f"1/{n} reviewed")
                assert shown_explanation(page) == CANDIDATES[1][1]

                page.locator("#review-explanation textarea").fill("Brows drawn together, lips pressed.")
                labels = page.locator("#review-labels input, #review-labels textarea").first
                labels.fill("Angry, tense")
                labels.press("Control+Enter")  # save the edit
                wait_progress(page, f"2/{n} reviewed")
                assert shown_explanation(page) == CANDIDATES[2][1]

                page.locator("#review-progress").click()
                page.keyboard.press("r")  # reject
                wait_progress(page, f"3/{n} reviewed")
                assert shown_explanation(page) == CANDIDATES[3][1]
            finally:
                stop(proc)

            # every decision is on disk, in order, with the reviewer's id
            rows = [json.loads(x) for x in log.read_text().splitlines()]
            assert [(r["id"], r["decision"], r["reviewer"]) for r in rows] == [
                (CANDIDATES[0][0], "accept", "alice"), (CANDIDATES[1][0], "edit", "alice"),
                (CANDIDATES[2][0], "reject", "alice")]
            assert rows[0]["explanation"] == CANDIDATES[0][1] and rows[0]["labels"] == CANDIDATES[0][2]
            assert rows[1]["explanation"] == "Brows drawn together, lips pressed."
            assert rows[1]["labels"] == ["angry", "tense"]
            assert rows[2]["explanation"] is None and rows[2]["labels"] is None

            # restart: the reviewed clips are not shown again
            proc, url = start_review(pool, "alice", tmp_path / "review2.log")
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 1100})
                page.goto(url, wait_until="load")
                wait_progress(page, f"3/{n} reviewed")
                assert shown_explanation(page) == CANDIDATES[3][1]
                page.locator("#review-accept").click()  # the mouse works too
                wait_progress(page, f"4/{n} reviewed")
                assert shown_explanation(page) == CANDIDATES[4][1]
            finally:
                stop(proc)
        finally:
            browser.close()
    decided = read_decisions(pool, "alice")
    assert list(decided) == [c[0] for c in CANDIDATES[:4]]
    assert decided[CANDIDATES[3][0]]["decision"] == "accept"


def test_reviewer_rules_without_a_browser(tmp_path):
    from model.data.curate.review_page import Reviewer
    from model.data.curate.review_pool import ReviewError

    pool = make_review_pool(tmp_path / "cand", cached_clip("review", seconds=2.0, fps=10)["path"])
    rev = Reviewer(pool, "bob")
    first, second = CANDIDATES[0], CANDIDATES[1]
    tab1 = rev.showing(rev.next())
    tab2 = rev.showing(rev.next())  # a second tab on the same clip
    assert tab1["id"] == tab2["id"] == first[0] and tab1 != tab2
    with pytest.raises(ReviewError, match="at least one label"):
        rev.decide(tab1, "edit", "Some text.", " , ")
    assert rev.progress() == (0, len(CANDIDATES))  # a refused edit records nothing
    # an "edit" that changes nothing (spacing and case aside) is an accept
    rec = rev.decide(tab1, "edit", "  " + first[1], ", ".join(x.upper() for x in first[2]))
    assert rec["decision"] == "accept" and rec["labels"] == first[2]
    assert rev.decide(tab1, "reject") is None  # a second key press in the same tab
    rec = rev.decide(tab2, "edit", "Lips pressed together.", "tense")  # the other tab: kept, last wins
    assert rec["decision"] == "edit"
    assert rev.next().id == second[0] and rev.decide(None, "accept") is None
    assert read_decisions(pool, "bob")[first[0]]["explanation"] == "Lips pressed together."
    assert rev.progress() == (1, len(CANDIDATES))
    # one writer per reviewer: a second page (another process) for carol is refused, naming the first
    holder = hold_lock(pool / "reviews" / "carol.jsonl")
    try:
        with pytest.raises(ReviewError, match=f"pid {holder.pid}"):
            Reviewer(pool, "carol")
    finally:
        holder.kill()
        holder.wait(30)
    rev.log.close()


class _ProxyRecorder:
    """A proxy that answers nothing and records the first line of every connection:
    anything the page process tries to reach outside 127.0.0.1 (through HTTP(S)_PROXY)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.lines: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.lines.append(conn.recv(4096).decode("latin-1").split("\r\n", 1)[0])
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def test_two_tabs_last_decision_wins_local_only_clips_only(tmp_path):
    """Two Chromium tabs of one reviewer on the same clip: the first accepts, the second
    edits; both are recorded and the edit (the last) is kept. The page process, started
    without the test suite's offline settings and with a proxy that records every
    outside connection, reaches nothing outside 127.0.0.1, and the browser loads
    nothing from elsewhere. It serves the clips, not other files of their folder, and
    leaves no copy of them in the temp dir when stopped."""
    from playwright.sync_api import sync_playwright

    pool = make_review_pool(tmp_path / "cand", cached_clip("review", seconds=2.0, fps=10)["path"])
    secret = pool / "videos" / "notes.txt"
    secret.write_text("a participant's name")
    proxy = _ProxyRecorder()
    env = {k: v for k, v in os.environ.items()
           if k not in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_PROXY", "no_proxy")}
    env.update(HTTP_PROXY=proxy.url, HTTPS_PROXY=proxy.url, ALL_PROXY=proxy.url, NO_PROXY="127.0.0.1,localhost")
    tmp = tmp_path / "tmp"  # the page's system temp dir: Gradio's copies of the clips go under it
    tmp.mkdir()
    env["TMPDIR"] = str(tmp)
    # `env -u`: serve_page sets GRADIO_ANALYTICS_ENABLED=False; the page must not need it
    cmd = ["env", "-u", "GRADIO_ANALYTICS_ENABLED", sys.executable, "-m", "model.data.curate", "review",
           str(pool), "--reviewer", "dora"]
    outside: list[str] = []
    n, edited = len(CANDIDATES), "Her mouth is tense, not smiling."
    try:
        proc, url = serve_page(cmd, tmp_path / "review.log", ROOT, env)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run"])
                try:
                    tabs = [browser.new_page(viewport={"width": 1300, "height": 1100}) for _ in range(2)]
                    for tab in tabs:
                        tab.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith("data:")
                               or r.url.startswith("blob:") else outside.append(r.url))
                        tab.goto(url, wait_until="load")
                        wait_progress(tab, f"0/{n} reviewed")
                        assert shown_explanation(tab) == CANDIDATES[0][1]
                    tabs[0].locator("#review-progress").click()
                    tabs[0].keyboard.press("a")  # tab 1 accepts clip 1
                    wait_progress(tabs[0], f"1/{n} reviewed")
                    tabs[1].locator("#review-explanation textarea").fill(edited)  # tab 2, still on clip 1
                    labels = tabs[1].locator("#review-labels input, #review-labels textarea").first
                    labels.fill("tense")
                    labels.press("Control+Enter")
                    wait_progress(tabs[1], f"1/{n} reviewed")
                    assert shown_explanation(tabs[1]) == CANDIDATES[1][1]
                finally:
                    browser.close()
            base = url.rstrip("/")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{base}/gradio_api/file={secret}")
            assert refused.value.code in (403, 404)
            with urllib.request.urlopen(f"{base}/gradio_api/file={pool / 'videos' / 'dfew_001.mp4'}") as r:
                assert r.status == 200
        finally:
            stop(proc)
    finally:
        proxy.close()
    rows = [json.loads(x) for x in (pool / "reviews" / "dora.jsonl").read_text().splitlines()]
    assert [(r["id"], r["decision"]) for r in rows] == [(CANDIDATES[0][0], "accept"), (CANDIDATES[0][0], "edit")]
    kept = read_decisions(pool, "dora")[CANDIDATES[0][0]]
    assert kept["decision"] == "edit" and kept["explanation"] == edited and kept["labels"] == ["tense"]
    assert proxy.lines == [] and outside == []
    assert list(tmp.rglob("*")) == []  # no copy of a clip outlives the page (stopped with SIGTERM)
