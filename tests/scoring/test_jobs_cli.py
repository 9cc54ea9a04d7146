"""The scoring jobs' command lines and idempotency ids (no Spark started)."""

from __future__ import annotations

import pytest

from infra.config import load_config
from jobs import score_batch, stream_scores


def test_stream_scores_arguments():
    args = stream_scores.parse_args([])
    assert (args.config, args.available_now, args.starting_version) == ("local", False, "0")
    args = stream_scores.parse_args(["--available-now", "--starting-version", "latest"])
    assert (args.available_now, args.starting_version) == (True, "latest")
    with pytest.raises(SystemExit):
        stream_scores.parse_args(["--starting-version", "-3"])


def test_score_batch_arguments():
    args = score_batch.parse_args(["--version", "4", "--output", "/tmp/x", "--kafka"])
    assert (args.version, args.output, args.kafka, args.features_version) == (
        4,
        "/tmp/x",
        True,
        None,
    )


def test_app_id_follows_the_checkpoint():
    a, b = stream_scores.app_id("/ck/stream_scores"), stream_scores.app_id("/ck2/stream_scores")
    assert a == stream_scores.app_id("/ck/stream_scores") and a != b
    assert a.startswith("stream_scores-") and len(a) == len("stream_scores-") + 12


def test_rules_come_from_the_scoring_config():
    cfg = load_config("local", environ={"CHURN__SCORING__BAND_HIGH": "0.7"})
    rules = stream_scores.rules_from(cfg)
    assert (rules.band_medium, rules.band_high, rules.reasons_for_bands) == (
        0.3,
        0.7,
        ("medium", "high"),
    )
