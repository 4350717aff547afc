"""`lifecycle-es report`: one self-contained HTML page of a run, checked as text and in Chromium."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from _chromium import CHROMIUM, Page, open_page, png_rows

import bus
from bus import MemoryLog
from lifecycle_es import Action, DecisionMade, Lifecycle
from replay import ReportSummary, write_report
from replay.cli import main
from tests._cli import one_line, run_cli

RUN = "report-demo"
PLOTS = ("timeline", "population", "metrics", "gates", "time-in-state")
_NETWORK = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)|@import|url\(\s*["']?(?:https?:|//)""", re.I
)


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The log URL of a short real demo run (300 steps: every phase, a few seconds)."""
    url = f"jsonl://{tmp_path_factory.mktemp('report') / 'runs'}"
    with contextlib.redirect_stdout(io.StringIO()):
        status = main(["demo", "--steps", "300", "--log", url, "--run", RUN, "--quiet"])
    assert status == 0
    return url


@pytest.fixture(scope="module")
def report(demo_log: str, tmp_path_factory: pytest.TempPathFactory) -> ReportSummary:
    """The demo run's report, written once for the module."""
    with bus.open(demo_log, RUN, create=False) as log:
        return write_report(log, tmp_path_factory.mktemp("html") / "report.html")


@pytest.fixture
def decided() -> Lifecycle:
    """A run on a memory log: two experts, a prune decision, the loss observed twice."""
    lc = Lifecycle(MemoryLog("decided"))
    lc.start(seed=3)
    lc.register("x", "expert", state="active", layer=0, slot=0, step=1)
    lc.register("y", "expert", state="active", layer=0, slot=1, step=1)
    lc.observe({"loss": 0.9}, step=10)
    decision = DecisionMade(
        run_id="decided", step=10, action=Action.PRUNE, entity="x", layer=0, reason="idle", apply_at_step=11
    )
    lc.append([decision])
    lc.transition("x", "dormant", step=11)
    lc.observe({"loss": 0.5, "tokens_per_s": 1200.0}, step=20)
    lc.seal(20)
    return lc


def test_the_demo_report_draws_every_plot(report: ReportSummary) -> None:
    """The demo run's page has all five plots, the loss among the metrics, and says what it holds."""
    assert report.plots == PLOTS
    assert report.run_id == RUN and report.steps == 300 and report.entities >= 4
    html = report.path.read_text()
    assert report.bytes == len(html.encode())
    metrics = html[html.index("<section id='metrics'>") : html.index("<section id='gates'>")]
    assert metrics.count("<svg") == 1 and "loss" in html


def test_the_page_loads_nothing(report: ReportSummary) -> None:
    """No script, stylesheet, font or image is fetched: no http(s) URL in src, href or CSS."""
    html = report.path.read_text()
    assert "<script" not in html and "<link" not in html and "<img" not in html and "<iframe" not in html
    assert not _NETWORK.search(html)


def test_each_decision_row_is_anchored_at_its_seq(decided: Lifecycle, tmp_path: Path) -> None:
    """A decision's row has id `seq-N` and shows N as a link to itself; its plot markers link there."""
    summary = write_report(decided.log, tmp_path / "r.html")
    html = summary.path.read_text()
    seq = next(r["seq"] for r in decided.log.read() if r["kind"] == "DecisionMade")
    assert (
        f"<tr id='seq-{seq}'><td><a href='#seq-{seq}'>{seq}</a></td><td>10</td><td>11</td><td>PRUNE</td>"
        in html
    )
    assert html.count(f'href="#seq-{seq}"') == 2  # the timeline's marker and the population's
    assert summary.decisions == 1 and {"timeline", "population", "metrics"} <= set(summary.plots)


def test_run_level_metrics_are_plotted_one_panel_each(decided: Lifecycle, tmp_path: Path) -> None:
    """Every run-level metric, the loss and any other the run records, has a panel of its own."""
    html = write_report(decided.log, tmp_path / "r.html").path.read_text()
    metrics = html[html.index("<section id='metrics'>") : html.index("<section id='gates'>")]
    assert metrics.count('id="metrics-axes_') == 2


def test_a_run_without_entities_says_so_instead_of_plotting(tmp_path: Path) -> None:
    """A log with only the run's start has no plots, a sentence in each section, and no decisions."""
    lc = Lifecycle(MemoryLog("empty"))
    lc.start()
    summary = write_report(lc.log, tmp_path / "r.html")
    html = summary.path.read_text()
    assert summary.plots == () and summary.entities == 0 and summary.decisions == 0
    assert "The log registers no entity." in html and "The log records no decision." in html
    assert "Lifecycle.observe({'loss': ...})" in html


def test_the_command_writes_the_report(
    demo_log: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lifecycle-es report LOG --run RUN -o PATH` writes the page and says where, with its size."""
    target = tmp_path / "out.html"
    status, out, err = run_cli(capsys, "report", demo_log, "--run", RUN, "-o", str(target))
    assert (status, err) == (0, "")
    assert out.startswith(f"report of run {RUN} written to {target} (") and "5 plots" in out
    assert target.read_text().startswith("<!DOCTYPE html>")


def test_the_command_names_the_extra_when_matplotlib_is_missing(
    demo_log: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without matplotlib the command fails in one line that says what to install, and writes nothing."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    target = tmp_path / "out.html"
    status, out, err = run_cli(capsys, "report", demo_log, "--run", RUN, "-o", str(target))
    assert status == 1 and out == ""
    assert "pip install 'lifecycle-es[report]'" in one_line(err)
    assert not target.exists()


def test_the_command_refuses_an_unwritable_path(
    demo_log: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path in a missing directory is one line on stderr and exit status 2."""
    status, _, err = run_cli(capsys, "report", demo_log, "--run", RUN, "-o", str(tmp_path / "no" / "r.html"))
    assert status == 2 and "cannot write" in one_line(err)


# -- in a browser ---------------------------------------------------------------------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def page(report: ReportSummary, tmp_path_factory: pytest.TempPathFactory) -> Page:
    """The demo report loaded in headless Chromium (skipped without it, except in CI)."""
    if not CHROMIUM.exists():
        if _in_ci():
            pytest.fail(f"CI=true but {CHROMIUM} is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); CI installs it and runs this")
    return open_page(report.path, tmp_path_factory.mktemp("chromium"))


def test_chromium_made_no_request_but_the_file(page: Page) -> None:
    """The browser asked for the report file and nothing else, and no link leaves the page."""
    assert page.requests == [page.url]
    assert [link for link in page.links if not link.startswith("#")] == []


def test_chromium_logged_no_error(page: Page) -> None:
    """No console error, error log entry or uncaught exception while the page loaded."""
    assert page.errors == []


def test_chromium_drew_every_plot(page: Page) -> None:
    """Every plot is laid out, every panel holds drawn paths, and its pixels are not blank."""
    assert [svg["section"] for svg in page.svgs] == list(PLOTS)
    for svg in page.svgs:
        assert svg["width"] > 300 and svg["height"] > 100, svg
        assert min(svg["drawn"]) > 0, svg
        width, channels, rows = png_rows(page.clips[svg["section"]])
        pixels = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), width, channels)[..., :3]
        colours = np.unique(pixels.reshape(-1, 3), axis=0)
        inked = (pixels.min(axis=2) < 200).mean()
        assert len(colours) > 20 and inked > 0.02 and pixels.std() > 10, svg["section"]
    assert png_rows(page.screenshot)[0] == 1400
