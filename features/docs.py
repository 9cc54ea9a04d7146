"""Render docs/features.md from the registry, so the documentation cannot drift from the code.

Run `python -m features.docs` to rewrite the file; a test fails when it is stale.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.registry import FEATURES, WINDOWS

DOCS_PATH = Path(__file__).resolve().parents[1] / "docs" / "features.md"

_HEADER = f"""# Features

Generated from `features/registry.py` by `python -m features.docs`; do not edit by hand.

Every feature is computed as of a date `as_of` from data strictly before it
(`features.compute.compute_features`). A window of N days covers daily rows with
`activity_date` in `[as_of - N, as_of)`; windows used: {", ".join(f"{w}d" for w in WINDOWS)}.
Lifetime features come from the lifetime table built from days before `as_of`.

Missing values:

- counts and sums over a window without activity are 0, never null;
- means and ratios with a zero denominator are null;
- recency (`days_since_*`) of something never seen is null; a user active the day
  before `as_of` has `days_since_last_event` = 1;
- trends are `(current - previous) / (current + previous)`, in [-1, 1], and 0 when both
  windows are empty.

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
    return _HEADER + "\n" + "\n".join(rows) + "\n"


def main() -> None:
    DOCS_PATH.write_text(render_feature_docs(), encoding="utf-8")
    print(f"wrote {DOCS_PATH} ({len(FEATURES)} features)")


if __name__ == "__main__":
    main()
