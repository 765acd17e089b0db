"""The reports render in a real browser (Debian's chromium, headless): every plot is
there, with its axes and legend, and no two of its labels overlap."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from engine.adapters import artifact
from training import experiments, figures, whatif
from training.evaluation import Estimate
from training.simulation import compare
from training.simulation.report import DayResult, PeerDay, Retrain, write_report

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
# Label boxes of one plot that overlap (the text of each SVG, as the browser lays it out).
OVERLAPS = """svg => {
  const boxes = [...svg.querySelectorAll('text')].map(t => t.getBoundingClientRect())
    .filter(b => b.width > 0);
  let n = 0;
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i], b = boxes[j];
    const x = a.left < b.right - 1 && b.left < a.right - 1;
    if (x && a.top < b.bottom - 1 && b.top < a.bottom - 1) n++;
  }
  return [boxes.length, n, svg.getBoundingClientRect().width];
}"""


def day(seed: int, d: int) -> DayResult:
    rng = np.random.default_rng(seed * 10 + d)
    oracle = 44.0 + rng.normal()
    return DayResult(
        day=d,
        model_version="v",
        decisions=1000,
        policy=oracle * (0.93 + 0.01 * d),
        greedy=oracle * 0.95,
        oracle=oracle,
        random=14.5,
        value_only=33.0,
        realised=40.0,
        acceptance=0.18 + 0.01 * rng.normal(),
        expected_acceptance=0.18,
        retrains=(
            Retrain(500, "v2", True, "better", Estimate(0.4, 0.1, 0.7), 0.5),
            Retrain(1000, "v3", False, "not better", Estimate(-0.1, -0.5, 0.3), -0.2),
        ),
        peers={
            "vw": PeerDay(oracle * 0.91, 0.17, 0.17),
            "ceiling": PeerDay(oracle * 0.984, 0.19, 0.19),
            "value": PeerDay(33.0, 0.09, 0.09),
            "random": PeerDay(14.5, 0.1, 0.1),
        },
        calibration=tuple((p, p * 0.8) for p in rng.uniform(0.02, 0.5, 300)),
    )


def test_every_report_renders_with_its_plots_and_no_overlapping_labels(
    tmp_path: Path, model_dir: Path
) -> None:
    runs = [[day(seed, d) for d in (1, 2, 3)] for seed in (1, 2, 3)]
    pages = {}
    pages["compare"] = tmp_path / "compare.html"
    compare.write_report(runs, compare.POLICIES, [1, 2, 3], pages["compare"])
    pages["simulation"] = tmp_path / "report.html"
    write_report(runs[0], pages["simulation"], artifact.load(model_dir))
    pages["whatif"] = tmp_path / "whatif.html"
    e = Estimate(37.6, 35.5, 39.7)
    result = whatif.Result(
        decisions=9000,
        skipped={},
        logged=Estimate(37.0, 35.0, 39.0),
        current={"snips": e, "dr": e},
        changed={"snips": Estimate(38.3, 32.3, 44.3), "dr": Estimate(37.8, 31.9, 43.7)},
        unsupported=0.0,
        unsupported_offers={},
        effective_sample=557.0,
    )
    whatif.write_report(result, pages["whatif"])
    pages["experiment"] = tmp_path / "experiment.html"
    logs = (
        [
            {"decision_id": f"d{i}", "customer_id": f"c{i}", "ts": float(i),
             "model_version": "chall" if i % 2 else "champ", "actions": [{"offer_id": "x"}]}
            for i in range(400)
        ],
        [{"decision_id": f"d{i}", "outcome": "accept", "value": 40.0} for i in range(0, 400, 7)],
    )  # fmt: skip
    experiments.write_report(experiments.report(*logs, "chall", 0.5), pages["experiment"])
    pages["one-retrain"] = tmp_path / "one.html"  # the smallest estimates plot: one row
    one = figures.estimates_against_truth(
        ["day 1, after 625"],
        [(0.9, -8.1, 9.9)],
        {"true lift": [0.7]},
        "value per decision, challenger - champion",
        "One retrain",
    )
    pages["one-retrain"].write_text(figures.page("One retrain", [("Lift", one)], "table"))
    expected = {"compare": 2, "simulation": 4, "whatif": 1, "experiment": 2, "one-retrain": 1}

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed: `make test` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        for name, path in pages.items():
            page.goto(path.as_uri())
            svgs = page.locator("svg")
            assert svgs.count() == expected[name], name
            for i in range(svgs.count()):
                labels, overlapping, width = svgs.nth(i).evaluate(OVERLAPS)
                assert labels >= 6, f"{name} plot {i}: axes, ticks and a title at least"
                assert overlapping == 0, f"{name} plot {i}: {overlapping} labels overlap"
                assert 300 < width <= 1000, f"{name} plot {i}: {width} px wide"
            assert page.locator("pre").count() == 1  # the figures as text, too
            cut = page.locator("pre").evaluate("pre => pre.scrollWidth - pre.clientWidth")
            assert cut <= 0, f"{name}: the table is cut by {cut} px on the right"
        browser.close()
    legend = pages["compare"].read_text()
    for policy in compare.POLICIES:
        assert f">{policy}<" in legend  # each policy named in the legend


def test_an_empty_calibration_is_still_a_plot() -> None:
    from training import figures

    svg = figures.calibration([], [], "nothing served")
    assert svg.startswith("<svg") and "nothing served" in svg


@pytest.mark.parametrize("label", ["short", "a label long enough to need more than one line"])
def test_long_labels_wrap(label: str) -> None:
    from training.figures import _wrap

    assert all(len(line) <= 28 for line in _wrap(label).splitlines())
