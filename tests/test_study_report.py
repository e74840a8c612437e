"""``python -m live.study report | export | withdraw`` on a study folder whose logs are
written here by the real ``StudyLog`` (values chosen so every table cell is known):
windows.csv and summary.csv cell by cell, report.html self-contained and rendered by
Chromium (screenshot), pseudonymised export with the key kept in the study, and a
withdrawal through ``live.study_log.withdraw``."""
import csv
import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from live.contract.appendfile import AppendFile
from live.contract.cli import EXIT_USAGE
from live.study import FAILURES, KEY_FILE, REPORT_HTML, SUMMARY_CSV, WINDOWS_CSV
from live.study.export import pseudonym
from live.study_log import StudyLog, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def study(cmd, *args):
    return subprocess.run([sys.executable, "-m", "live.study", cmd, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def window(index, start, end, label, event=None, condition=None, analysed=True, reason=None,
           face=1, speech=0.5, **kw):
    return {"index": index, "start": start, "end": end, "face_track": face, "speech_ratio": speech,
            "analysed": analysed, "reason": reason, "label": label, "labels": [label] if label else [],
            "event": event, "condition": condition, "events": [], "source": kw.pop("source", "x.mp4"), **kw}


def make_study(root: Path) -> Path:
    """p1 (session s1): markers at 1 s (baseline, rest) and 3 s (stimulus, stress);
    p2 (s2): one analysed window with a self-report, one gated, one failed; one
    recording that could not be read."""
    with StudyLog(root, "s1", "p1", consent=True) as log:
        log.write({"type": "marker", "event": "baseline", "condition": "rest", "media_time": 1.0,
                   "lsl_time": None, "wall_time": None})
        log.write({"type": "marker", "event": "stimulus", "condition": "stress", "media_time": 3.0,
                   "lsl_time": None, "wall_time": None})
        log.write(window(0, 0.0, 2.0, "happy", source="s1.mp4"))
        log.write(window(1, 1.0, 3.0, "happy", "baseline", "rest", source="s1.mp4"))
        log.write(window(2, 2.0, 4.0, "sad", "baseline", "rest", source="s1.mp4"))
        log.write(window(3, 3.0, 5.0, "sad", "stimulus", "stress", source="s1.mp4", speech=0.1))
    with StudyLog(root, "s2", "p2", consent=False) as log:
        log.write(window(0, 0.0, 2.0, "neutral", face=None, speech=0.0, source="s2.mp4", self_report="calm"))
        log.write(window(1, 1.0, 3.0, None, analysed=False, reason="gated", face=None, speech=0.0,
                         source="s2.mp4"))
        log.write(window(2, 2.0, 4.0, None, analysed=False, reason="error", source="s2.mp4", speech=1.0))
    with AppendFile(root / FAILURES) as f:
        f.append_json({"recording": "s3.mp4", "session": "s3", "participant": "p3", "error": "not media"})
    return root


@pytest.fixture
def folder(tmp_path):
    return make_study(tmp_path / "out")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_tables_cell_by_cell(folder):
    r = study("report", folder)
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout.strip().splitlines()[-1])
    assert {k: counts[k] for k in ("windows", "analysed", "gated", "failed", "recordings",
                                   "recordings_failed")} == {
        "windows": 7, "analysed": 5, "gated": 1, "failed": 1, "recordings": 2, "recordings_failed": 1}
    rows = read_csv(folder / WINDOWS_CSV)
    assert list(rows[0]) == ["participant", "recording", "session", "run", "index", "start", "end",
                             "seconds", "event", "condition", "events", "label", "labels", "speech_ratio",
                             "face_present", "self_report", "consent", "analysed", "reason"]
    assert len(rows) == 7  # windows only, no marker rows
    assert [(r["participant"], r["start"], r["seconds"], r["condition"], r["label"]) for r in rows[:4]] == [
        ("p1", "0.0", "2.0", "", "happy"), ("p1", "1.0", "1.0", "rest", "happy"),
        ("p1", "2.0", "1.0", "rest", "sad"), ("p1", "3.0", "1.0", "stress", "sad")]
    assert (rows[4]["self_report"], rows[4]["face_present"], rows[4]["consent"]) == ("calm", "False", "False")
    assert rows[0]["recording"] == "s1.mp4" and rows[0]["consent"] == "True"
    summary = {(r["participant"], r["condition"], r["label"]): r for r in read_csv(folder / SUMMARY_CSV)}
    assert set(summary) == {("p1", "", "happy"), ("p1", "rest", "happy"), ("p1", "rest", "sad"),
                            ("p1", "stress", "sad"), ("p2", "", "neutral"), ("p2", "", "")}
    cell = lambda key, *cols: tuple(summary[key][c] for c in cols)  # noqa: E731
    assert cell(("p1", "rest", "sad"), "windows", "seconds", "share") == ("1", "1.0", "0.5")
    assert cell(("p1", "stress", "sad"), "seconds", "share", "dominant", "speech_ratio") == ("1.0", "1.0", "True", "0.1")
    assert cell(("p2", "", "neutral"), "windows", "seconds", "share", "dominant", "face_present") == (
        "1", "2.0", "0.5", "True", "0.0")
    assert cell(("p2", "", ""), "windows", "seconds", "share", "dominant", "face_present") == (
        "2", "2.0", "0.5", "False", "0.5")
    for name in (WINDOWS_CSV, SUMMARY_CSV, REPORT_HTML):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600


def test_report_page_is_self_contained_and_renders_in_chromium(folder, tmp_path):
    from playwright.sync_api import sync_playwright

    assert study("report", folder).returncode == 0
    page_html = (folder / REPORT_HTML).read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href)=['"]([^'"]*)['"]""", page_html)
    assert refs and all(ref.startswith("data:image/png;base64,") for ref in refs), refs
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.route("**/*", lambda route: route.abort() if not route.request.url.startswith(("file:", "data:"))
                       else route.continue_())  # self-contained: nothing else may load
            page.goto((folder / REPORT_HTML).as_uri())
            images = page.evaluate("Array.from(document.images).map(i => [i.id || i.className, "
                                   "i.complete, i.naturalWidth, i.naturalHeight])")
            text = page.inner_text("body")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert [name for name, *_ in images] == ["heatmap", "timeline", "timeline"]  # one per participant
    assert all(done and w > 0 and h > 0 for _, done, w, h in images), images
    assert "s3.mp4" in text and "not media" in text  # the failed recording is listed
    assert shot.stat().st_size > 10_000


def test_export_pseudonymises_with_a_key_kept_in_the_study(folder, tmp_path):
    exp = tmp_path / "export"
    r = study("export", folder, "--out", exp, "--pseudonymise")
    assert r.returncode == 0, r.stderr
    key_file = folder / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = bytes.fromhex(key_file.read_text().strip())
    exported = {p.name: p.read_text(encoding="utf-8") for p in exp.iterdir()}
    assert set(exported) == {WINDOWS_CSV, SUMMARY_CSV}  # the key is not there
    for text in exported.values():
        assert key.hex() not in text
        for ident in ("p1", "p2", "s1.mp4", "s2.mp4"):
            assert not re.search(rf"(^|,){re.escape(ident)}(,|$)", text, re.M), ident
    rows = read_csv(exp / WINDOWS_CSV)
    assert {r["participant"] for r in rows} == {pseudonym(key, "p1"), pseudonym(key, "p2")}
    assert {r["participant"] for r in read_csv(exp / SUMMARY_CSV)} == {r["participant"] for r in rows}
    assert rows[0]["label"] == "happy"  # everything else as it was
    # the same key on the next export: the same pseudonyms; a new key would change them
    again = study("export", folder, "--out", exp, "--pseudonymise", "--overwrite")
    assert again.returncode == 0
    assert [r["participant"] for r in read_csv(exp / WINDOWS_CSV)] == [r["participant"] for r in rows]
    inside = study("export", folder, "--out", folder / "exp", "--pseudonymise")
    assert inside.returncode == EXIT_USAGE and "inside the study folder" in inside.stderr


def test_withdraw_purges_through_the_study_log_rule_and_remakes_the_tables(folder):
    assert study("report", folder).returncode == 0
    r = study("withdraw", folder, "--participant", "p1", "--records", "--reason", "asked")
    assert r.returncode == 0, r.stderr
    entry = json.loads(r.stdout.strip().splitlines()[-1])
    assert entry["participant"] == "p1" and entry["records_deleted"] == {"s1": 6}
    [audit] = read_jsonl(folder / "audit.jsonl")
    assert audit["participant"] == "p1" and audit["reason"] == "asked"
    assert not any(r.get("participant") == "p1" for p in folder.glob("s*.jsonl") for r in read_jsonl(p))
    assert {r["participant"] for r in read_csv(folder / WINDOWS_CSV)} == {"p2"}
    page = (folder / REPORT_HTML).read_text(encoding="utf-8")
    assert "<h3>p1</h3>" not in page and "<h3>p2</h3>" in page
    bad = study("withdraw", folder, "--participant", "../etc")
    assert bad.returncode == EXIT_USAGE and "not valid" in bad.stderr


def test_the_apps_live_logs_report_run_by_run(tmp_path):
    """A page's study log (source "live", several runs in one session, a self-report)
    is reported like an analysed study: each run's windows cover it once."""
    root = tmp_path / "logdir"
    with StudyLog(root, "lab1", "p9", consent=True) as log:
        for run in (1, 2):
            log.write({"type": "marker", "event": "clip", "condition": "amusement", "media_time": 2.5,
                       "lsl_time": 10.0, "wall_time": 1.0, "run": run})
            for i in range(3):
                log.write(window(i, float(i), i + 2.0, "happy", run=run, source="live", self_report="joy",
                                 **({"event": "clip", "condition": "amusement"} if i >= 2 else {})))
    assert study("report", root).returncode == 0
    rows = read_csv(root / WINDOWS_CSV)
    assert [(r["run"], r["seconds"]) for r in rows] == [("1", "2.0"), ("1", "1.0"), ("1", "1.0"),
                                                        ("2", "2.0"), ("2", "1.0"), ("2", "1.0")]
    assert {(r["recording"], r["self_report"]) for r in rows} == {("live", "joy")}
    summary = {(r["condition"], r["label"]): r["seconds"] for r in read_csv(root / SUMMARY_CSV)}
    assert summary == {("", "happy"): "6.0", ("amusement", "happy"): "2.0"}


def test_a_study_whose_every_recording_failed_is_still_reported(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with AppendFile(out / FAILURES) as f:
        f.append_json({"recording": "a.mp4", "session": "a", "participant": "a", "error": "not media"})
    r = study("report", out)
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert (line["windows"], line["recordings_failed"]) == (0, 1)
    assert line["windows_csv"] == str(out / WINDOWS_CSV) and line["report_html"] == str(out / REPORT_HTML)
    assert read_csv(out / WINDOWS_CSV) == [] and "not media" in (out / REPORT_HTML).read_text()
