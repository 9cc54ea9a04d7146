"""Render docs/features.md from the registry, so the documentation cannot drift from the code.

Run `python -m features.docs` to rewrite the file; a test fails when it is stale.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.expectations import feature_expectations
from features.registry import FEATURES, WINDOWS

DOCS_PATH = Path(__file__).resolve().parents[1] / "docs" / "features.md"

_HEADER = """# Features

Generated from `features/registry.py` by `python -m features.docs`; do not edit by hand.

Every feature is computed as of a date `as_of` from data strictly before it
(`features.compute.compute_features`). A window of N days covers daily rows with
`activity_date` in `[as_of - N, as_of)`; windows used: {windows}.
Lifetime features come from the lifetime table built from days before `as_of`.

Missing values:

- counts and sums over a window without activity are 0, never null;
- means and ratios with a zero denominator are null;
- recency (`days_since_*`) of something never seen is null; a user active the day
  before `as_of` has `days_since_last_event` = 1;
- trends are `(current - previous) / (current + previous)`, in [-1, 1], and 0 when both
  windows are empty.

## Data quality

The feature stream checks every micro-batch against the expectations declared in
`features/expectations.py` (decision 69), before the batch's features are written:

| kind | on | rule | severity |
| --- | --- | --- | --- |
| `not_null:<feature>` | the batch's feature vectors | window counts and sums, and trends, are never null | error |
| `range:<feature>` | the batch's feature vectors | counts, sums and ratios >= 0 (amounts and quantities are validated non-negative); trends in [-1, 1]; recency >= 1 day | error |
| `in_set:event_type` | the batch's valid events | of the types the features count | warn |
| `volume:valid_share` | the batch | its valid share not more than 0.2 below the median share of the last 20 batches (batches of 100 records or more; needs 3 of them) | warn |

The feature checks come from each feature's formula: {n_checks} checks for {n_features}
features. Violations are counted per check in the batch's `feature_batches` row
(`dq_violations`, check -> rows, or 1 for a batch-level check), in the progress line
(`dq violations: ...`) and in the metric `churn_dq_violations_total{{check, severity}}`.
`stream_features.dq_stop_on` (default `error`) stops the stream on a violation of that
severity or above: the batch's features and row are not written, the job exits with the
checks it broke, and the batch is redone whole from the checkpoint at the next start;
`never` only counts.

## The catalogue

The order of this table is `FEATURE_NAMES`, the model's feature schema.
"""


def catalogue() -> pd.DataFrame:
    """The feature catalogue as a frame: name, type, window, description, in model order."""
    return pd.DataFrame(
        [
            {
                "name": f.name,
                "type": f.dtype,
                "window": f"{f.window_days}d" if f.window_days else "lifetime",
                "description": f.description,
            }
            for f in FEATURES
        ],
        index=pd.RangeIndex(1, len(FEATURES) + 1, name="#"),
    )


def render_feature_docs() -> str:
    """Markdown for docs/features.md: the conventions above and one table row per feature."""
    rows = [
        "| # | name | type | window | description |",
        "|---|------|------|--------|-------------|",
    ]
    for i, f in catalogue().iterrows():
        rows.append(f"| {i} | `{f['name']}` | {f['type']} | {f['window']} | {f['description']} |")
    header = _HEADER.format(
        windows=", ".join(f"{w}d" for w in WINDOWS),
        n_checks=len(feature_expectations()),
        n_features=len(FEATURES),
    )
    return header + "\n" + "\n".join(rows) + "\n"


def main() -> None:
    DOCS_PATH.write_text(render_feature_docs(), encoding="utf-8")
    print(f"wrote {DOCS_PATH} ({len(FEATURES)} features)")


if __name__ == "__main__":
    main()
