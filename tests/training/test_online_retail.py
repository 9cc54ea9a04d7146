"""Training on the real Online Retail log: the model beats the recency-only baseline (slow).

Invoice lines are replayed as contract-v1 events (sources.replay), the ones the stream
would reject are dropped (no customer, negative amounts...), and the rest go through the
same daily aggregates, spine, labels and fit as production. Cutoffs: every 14 days up to
the last one whose 91-day horizon has elapsed (2011-09-10; the log ends 2011-12-09).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sources.contract import contract_errors
from sources.replay import replay_online_retail
from training.pipeline import fit_and_evaluate

pytestmark = pytest.mark.slow

RETAIL_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "online-retail"


@pytest.mark.skipif(
    not (RETAIL_DIR / "by-day").is_dir(),
    reason=f"Online Retail data not found at {RETAIL_DIR} (shared data, not in the repo)",
)
def test_model_beats_recency_on_online_retail(base_config, records_daily, rows_from_daily):
    records = [r.value for r in replay_online_retail(RETAIL_DIR) if r.key is not None]
    valid = [v for v in records if not contract_errors(v)]
    t = base_config.training.model_copy(
        update={"horizon_days": 91, "lookback_days": 91, "step_days": 14, "min_history_days": 91}
    )
    split, parts = rows_from_daily(records_daily(valid), t)
    m = fit_and_evaluate(parts, t).metrics
    print(
        f"\nOnline Retail: {len(valid)} valid events of {len(records)} with a customer; "
        f"test cutoff {split.test[0]}, valid {split.valid[0]}, "
        f"{len(split.train)} train cutoffs; horizon 91 days\n"
        f"rows train/valid/test {len(parts['train'])}/{len(parts['valid'])}/{len(parts['test'])}, "
        f"test churn rate {m['model']['label_rate']:.3f}\n"
        + "\n".join(
            f"  {k:9} roc_auc {v['roc_auc']:.4f}  pr_auc {v['pr_auc']:.4f}  "
            f"log_loss {v['log_loss']:.4f}  lift@10% {v['lift_top_decile']:.2f}"
            for k, v in m.items()
        )
    )
    assert split.test[0].year == 2011 and split.test[0].month == 9
    assert m["model"]["roc_auc"] > m["recency"]["roc_auc"]
