"""training.explore's pure parts: label rates per cutoff (the MLflow readers run in the
notebook test against a real server)."""

from __future__ import annotations

from datetime import date

import pandas as pd

from training.explore import RUN_METRICS, label_rates, runs_figure


def test_label_rates_per_cutoff_and_split():
    parts = {
        "train": pd.DataFrame(
            {
                "cutoff": [date(2024, 1, 1)] * 4 + [date(2024, 1, 8)] * 2,
                "churned": [1, 0, 0, 0, 1, 1],
            }
        ),
        "valid": pd.DataFrame({"cutoff": [date(2024, 1, 15)] * 2, "churned": [0, 1]}),
        "test": pd.DataFrame({"cutoff": [date(2024, 1, 22)], "churned": [0]}),
    }
    out = label_rates(parts)
    assert out["split"].tolist() == ["train", "train", "valid", "test"]
    assert out["rows"].tolist() == [4, 2, 2, 1]
    assert out["churn_rate"].tolist() == [0.25, 1.0, 0.5, 0.0]


def test_runs_figure_draws_runs_with_missing_champion_metrics():
    table = pd.DataFrame(
        {"run_id": ["a" * 32, "b" * 32], "run_name": ["r1", "r2"]}
        | {m: [0.8, 0.9] for m in RUN_METRICS}
    )
    table.loc[0, "champion_test_roc_auc"] = float("nan")  # the first run had no champion
    table.loc[1, "gate_promoted"] = 0.0
    fig = runs_figure(table)
    assert len(fig.axes[0].get_xticklabels()) == 2
