"""Measure what scoring costs: predict vs exact TreeSHAP, driver pandas vs mapInPandas.

    python -m scoring.bench                  # 10k rows x 85 features, 300 trees
    python -m scoring.bench --rows 50000 --spark

The numbers in docs/scoring.md come from this script. The model is trained on synthetic
rows shaped like user_features (counts, ratios, recency, NaN where undefined), with
LightGBM's defaults from the training config (31 leaves) and a fixed number of trees.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.registry import FEATURE_NAMES
from scoring.score import ScoringModel, ScoringRules, score_frame


def synthetic_features(rows: int, seed: int = 0) -> pd.DataFrame:
    """user_features-like rows: lineage columns plus FEATURE_NAMES (float64, some NaN)."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(1.5, 3.0, size=(rows, len(FEATURE_NAMES)))
    x[rng.random(x.shape) < 0.1] = np.nan
    frame = pd.DataFrame(x, columns=FEATURE_NAMES)
    frame.insert(0, "features_committed_at", pd.Timestamp("2024-03-06 01:02:03"))
    frame.insert(0, "features_version", 7)
    frame.insert(0, "as_of", pd.Timestamp("2024-03-06").date())
    frame.insert(0, "user_id", [f"u{i}" for i in range(rows)])
    return frame


def synthetic_model(trees: int = 300, rows: int = 10_000, seed: int = 0) -> ScoringModel:
    """A binary LightGBM booster on synthetic data whose label depends on a few features."""
    frame = synthetic_features(rows, seed)
    x = frame[FEATURE_NAMES]
    logit = 0.3 * x.iloc[:, 0].fillna(0) - 0.2 * x.iloc[:, 5].fillna(3) + 0.1 * x.iloc[:, 40]
    y = (logit.fillna(0) + np.random.default_rng(seed).normal(0, 1, rows) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 31, "verbosity": -1, "seed": seed}
    booster = lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=trees)
    return ScoringModel("bench", 1, booster)


def rate(rows: int, fn: Callable[[], object], repeat: int = 3) -> float:
    """Best-of-``repeat`` rows per second of ``fn``."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return rows / best


def bench_python(rows: int, trees: int) -> dict[str, float]:
    model = synthetic_model(trees)
    frame = synthetic_features(rows, seed=1)
    x = frame[FEATURE_NAMES].to_numpy(np.float64)
    booster = model.booster
    sample = x[: max(1, rows // 10)]
    out = {
        "predict": rate(rows, lambda: booster.predict(x)),
        "pred_contrib": rate(len(sample), lambda: booster.predict(sample, pred_contrib=True), 1),
        "score_frame_no_reasons": rate(
            rows, lambda: score_frame(model, frame, ScoringRules(reasons_for_bands=()))
        ),
    }
    return out


def bench_spark(rows: int, trees: int) -> dict[str, float]:
    """From a cached DataFrame of vectors to scores written to Spark's no-op sink."""
    from pyspark.sql import DataFrame

    from infra.config import load_config
    from infra.spark import build_spark
    from scoring.sink import SCORE_FRAME_SCHEMA, to_spark

    spark = build_spark(load_config(), "scoring-bench")
    model = synthetic_model(trees)
    rules = ScoringRules(reasons_for_bands=())
    df = spark.createDataFrame(synthetic_features(rows, seed=1)).repartition(2).cache()
    df.count()
    model_text = model.booster.model_to_string()

    def sink(out: DataFrame) -> None:
        out.write.format("noop").mode("overwrite").save()

    def driver() -> None:  # what the stream does per micro-batch
        sink(to_spark(spark, score_frame(model, df.toPandas(), rules)))

    def score_parts(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        local = ScoringModel("bench", 1, lgb.Booster(model_str=model_text))
        for part in parts:
            yield score_frame(local, part, rules)

    def executors() -> None:
        sink(df.mapInPandas(score_parts, SCORE_FRAME_SCHEMA))

    try:
        return {"driver_pandas": rate(rows, driver, 2), "map_in_pandas": rate(rows, executors, 2)}
    finally:
        df.unpersist()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m scoring.bench", description=__doc__)
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--trees", type=int, default=300)
    p.add_argument("--spark", action="store_true", help="also time driver pandas vs mapInPandas")
    args = p.parse_args(argv)
    results = bench_python(args.rows, args.trees)
    if args.spark:
        results |= bench_spark(args.rows, args.trees)
    print(f"{args.rows:,} rows x {len(FEATURE_NAMES)} features, {args.trees} trees:")
    for name, value in results.items():
        print(f"  {name:24s} {value:>12,.0f} rows/s")
    print(
        f"  pred_contrib / predict cost ratio: {results['predict'] / results['pred_contrib']:,.0f}x"
    )


if __name__ == "__main__":
    main()
