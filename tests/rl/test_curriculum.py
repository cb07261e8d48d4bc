"""The noise curriculum against a golden table and hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zerosearch_core.rl.curriculum import noise_probability

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "curriculum.json").read_text())["rows"]


@pytest.mark.parametrize("row", GOLDEN, ids=[f"{r['step']}/{r['total_steps']}-b{r['base']}" for r in GOLDEN])
def test_golden_table(row: dict) -> None:
    args = (row["step"], row["total_steps"], row["start"], row["end"], row["base"])
    assert noise_probability(*args) == pytest.approx(row["p"], abs=1e-9)


def test_hand_computed_points_and_shape() -> None:
    # b = 4, m = 10: at i = 5, 4^(1/2) = 2, so p = (2 - 1) / 3 * 0.5
    assert noise_probability(5, 10, 0.0, 0.5, 4.0) == pytest.approx(1 / 6)
    values = [noise_probability(i, 10, 0.0, 0.5, 4.0) for i in range(11)]
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.5)
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    assert all(s > 0 for s in steps) and steps == sorted(steps)  # rising, and faster later (convex)
    assert noise_probability(3, 10, 0.5, 0.1, 4.0) < 0.5  # a decreasing schedule works too


@pytest.mark.parametrize(
    ("args", "message"),
    [((11, 10, 0.0, 0.5, 4.0), "outside"), ((0, 0, 0.0, 0.5, 4.0), "total_steps"), ((1, 10, 0.0, 0.5, 1.0), "not 1")],
)
def test_bad_arguments_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        noise_probability(*args)
