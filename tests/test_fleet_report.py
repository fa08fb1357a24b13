"""benchmarks/fleet.py: its report and plot from a fleet.json (the rounds themselves need a finished demo)."""

from __future__ import annotations

import cv2
import pytest

from benchmarks import fleet


def _arm(miou: float, delta: float, promote: bool) -> dict:
    return {
        "frames": 40,
        "frames_kept": 38,
        "candidate_miou": miou,
        "gate": {"promote": promote, "reason": "interval above 0" if promote else "interval below 0"},
        "deployed_miou": miou,
        "vs_round0": {"delta": delta, "low": delta - 0.01, "high": delta + 0.02, "verdict": "better"},
    }


def test_report_has_a_row_per_round_the_gates_and_the_plot(tmp_path):
    state = {
        "settings": {"vehicles": "2", "frames": "30", "rounds": "2", "epochs": "1"},
        "round0_miou": 0.40,
        "rounds": [
            {
                "round": r,
                "arms": {"harvested": _arm(0.40 + 0.03 * r, 0.03 * r, True), "random": _arm(0.41, 0.01, r == 1)},
                "harvested_minus_random": {"delta": 0.0123, "low": 0.004, "high": 0.0201, "verdict": "better"},
            }
            for r in (1, 2)
        ],
        "wall_s": 12.0,
    }
    fleet.write_report(state, tmp_path)
    text = (tmp_path / "fleet.md").read_text()
    assert "round 0 (the demo's CSST student): 40.0 mIoU" in text
    assert (
        "| 2 | 40 | 46.0 | +6.00 [+5.00, +8.00] | 41.0 | +1.00 [+0.00, +3.00] | +1.23 [+0.40, +2.01] (better) |" in text
    )
    assert "- round 2 random: candidate 41.0, rejected (interval below 0)" in text
    image = cv2.imread(str(tmp_path / "fleet.png"))
    assert image is not None and image.shape[0] > 100
    assert not list(tmp_path.glob(".*tmp*"))


def test_options_are_the_recipe_fields():
    r = fleet.recipe_from_argv(fleet.Recipe, ["--vehicles=2", "--min-score=0.2", "--out=x"], None)
    assert (r.vehicles, r.min_score, str(r.out)) == (2, 0.2, "x")
    with pytest.raises(SystemExit):
        fleet.recipe_from_argv(fleet.Recipe, ["--vehicles=two"], None)
