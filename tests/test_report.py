"""The HTML report, parsed: every device that is not healthy, markers on every plot, units, scores."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import require

require("polars")
require("rich")

from degrade.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "datasets" / "demo"


class _Report(HTMLParser):
    """Collects device rows, cards, plots (with their markers and labels) and job-event rows."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict] = {}  # device -> attrs of its row in the table
        self.cards: dict[str, dict] = {}  # device -> {"text": str, "plots": [plot]}
        self.jobs = 0
        self.text: list[str] = []
        self._card = None
        self._depth = 0
        self._svg = None
        self._text_tag = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-device" in a:
            self.rows[a["data-device"]] = a
        if tag == "tr" and a.get("class") == "job-event":
            self.jobs += 1
        if tag == "div" and a.get("class") == "card":
            self._card = self.cards.setdefault(a["data-device"], {"text": [], "plots": []})
            self._depth = 0
        if tag == "div" and self._card is not None:
            self._depth += 1
        if tag == "svg":
            self._svg = {"signal": a.get("data-signal"), "markers": [], "labels": {}, "y": None}
        if self._svg is not None and tag == "line" and "marker" in (a.get("class") or ""):
            self._svg["markers"].append(a["class"].split()[-1])
        if self._svg is not None and tag == "text":
            self._text_tag = a

    def handle_endtag(self, tag):
        if tag == "svg" and self._svg is not None:
            if self._card is not None:
                self._card["plots"].append(self._svg)
            self._svg = None
        if tag == "text":
            self._text_tag = None
        if tag == "div" and self._card is not None:
            self._depth -= 1
            if self._depth == 0:
                self._card = None

    def handle_data(self, data):
        self.text.append(data)
        if self._card is not None:
            self._card["text"].append(data)
        if self._svg is not None and self._text_tag is not None:
            cls = self._text_tag.get("class")
            if cls == "y-label":
                self._svg["y"] = data
            if data.split()[0] in ("onset", "detected"):
                self._svg["labels"][data.split()[0]] = (float(self._text_tag["x"]),
                                                         float(self._text_tag["y"]))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    assert main(["analyze", str(DEMO), "--format", "json", "-o", str(d / "v.json"),
                 "--report", str(d / "r.html"), "--no-progress"]) == 0
    # --format html writes the same report
    assert main(["analyze", str(DEMO), "--format", "html", "-o", str(d / "f.html"),
                 "--no-progress"]) == 0
    doc = json.loads((d / "v.json").read_text())
    return doc, (d / "r.html").read_text(), (d / "f.html").read_text()


def test_every_device_that_is_not_healthy_is_in_the_report(demo):
    doc, text, _ = demo
    p = _Report()
    p.feed(text)
    flagged = [v for v in doc["verdicts"] if v["status"] != "healthy"]
    assert {v["status"] for v in flagged} >= {"failed", "degraded", "unknown"}
    assert set(p.rows) == {v["device"] for v in flagged}
    assert set(p.cards) == {v["device"] for v in flagged}
    for v in flagged:
        assert p.rows[v["device"]]["data-status"] == v["status"]
        card = " ".join(p.cards[v["device"]]["text"])
        assert v["action"] in card
        for r in v["reasons"]:  # unknown devices keep their reason ("no data since step 899")
            words = [w for w in r.split() if not w.startswith("t=")]
            assert all(w in card for w in words), (r, card)
    assert p.jobs == len(doc["jobs"]) >= 1
    body = " ".join(p.text)
    assert "1000000" not in body and "hard fault" in body  # the XID 79 device's score
    assert "t=17" not in body  # times are ISO 8601 UTC, not raw epochs


def test_every_plot_has_markers_units_and_separate_labels(demo):
    doc, text, _ = demo
    p = _Report()
    p.feed(text)
    plots = [(dev, s) for dev, c in p.cards.items() for s in c["plots"]]
    judged = [v for v in doc["verdicts"] if v["status"] in ("failed", "degraded", "suspect")]
    # each judged device has at least its timing plot; counter evidence gets its own plot
    assert {dev for dev, _ in plots} == {v["device"] for v in judged}
    if any("PCIe link width" in r for v in judged for r in v["reasons"]):
        assert any(s["signal"] == "pcie_link_width" for _, s in plots)
    for dev, s in plots:
        assert s["markers"], (dev, s["signal"])
        assert s["y"] and s["y"].endswith(")"), s  # "compute_time (s)", "sm_clock_mhz (MHz)", ...
        if len(s["labels"]) == 2:
            (_, y1), (_, y2) = s["labels"]["onset"], s["labels"]["detected"]
            assert y1 != y2  # one row each: the labels cannot overlap
    # devices with a step onset carry both markers on their timing plot
    for v in judged:
        if v["onset_step"] is not None:
            timing = p.cards[v["device"]]["plots"][0]
            assert {"marker-onset", "marker-detected"} <= set(timing["markers"]), v["device"]


def test_format_html_is_the_report(demo):
    _, text, html_fmt = demo
    a, b = _Report(), _Report()
    a.feed(text)
    b.feed(html_fmt)
    assert set(a.rows) == set(b.rows) and a.jobs == b.jobs
    assert html_fmt.startswith("<!DOCTYPE html>")


def test_format_html_to_a_pipe_writes_the_page_to_stdout(capsys):
    assert main(["analyze", str(DEMO), "--format", "html", "--no-progress"]) == 0
    out = capsys.readouterr().out
    p = _Report()
    p.feed(out)
    assert out.startswith("<!DOCTYPE html>") and p.rows


def test_a_marker_before_the_first_sample_is_drawn_at_the_edge():
    import numpy as np

    from degrade.analyze._report import svg_plot

    x = np.arange(100.0, 200.0)
    y = np.ones_like(x)
    s = {"signal": "compute_time", "axis": "step", "x": x, "device": y, "median": y, "lo": y * 0.9,
         "hi": y * 1.1, "peers": 3}
    svg = svg_plot(s, onset=50.0, detected=120.0)
    p = _Report()
    p.feed(f'<div class="card" data-device="d">{svg}</div>')
    (plot,) = p.cards["d"]["plots"]
    assert plot["markers"] == ["marker-onset", "marker-detected"]
    assert "onset (before)" in svg
    assert svg_plot(s, onset=500.0, detected=None).count('class="marker') == 0  # after the end: none
