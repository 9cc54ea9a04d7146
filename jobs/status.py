"""The streams' health on one screen: what the two streaming jobs serve on /metrics.

For each of stream_features and stream_scores: up or down, micro-batches and the last
one's age and steps, input and processing rates, lag (records per Kafka partition; table
versions for the scorer), records by outcome, freshness, and for the scorer the model in
use and the scores by band. It reads the endpoints named by ``monitoring`` in the config
(infra/metrics.py); a job that is not running is shown as down. Exit status: 0 when both
are up, 1 otherwise.

  python -m jobs.status                 # once
  python -m jobs.status --watch 5       # every 5 s until Ctrl-C
"""

from __future__ import annotations

import argparse
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from infra.cli import add_config_arguments, run
from infra.config import Config, load_config
from scoring.score import BANDS

JOBS = ("stream_features", "stream_scores")


@dataclass
class Scrape:
    """One endpoint's samples: name -> [(labels, value)]; ``error`` when unreachable."""

    url: str
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    error: str | None = None

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of ``name``'s samples whose labels include ``labels`` (None: none)."""
        found = [
            v
            for have, v in self.samples.get(name, [])
            if all(have.get(k) == w for k, w in labels.items())
        ]
        return sum(found) if found else None

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for have, v in self.samples.get(name, []):
            out[have.get(label, "")] += v
        return dict(out)


def scrape(url: str, timeout_s: float = 5.0) -> Scrape:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Scrape(url, error=str(reason))
    out = Scrape(url)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def endpoint(cfg: Config, job: str) -> str | None:
    m = cfg.monitoring
    port = getattr(m.metrics_port, job)
    host = "127.0.0.1" if m.metrics_host == "0.0.0.0" else m.metrics_host
    return f"http://{host}:{port}/metrics" if port else None


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def describe(job: str, s: Scrape) -> list[str]:
    """The lines for one job."""
    if s.error is not None:
        return [f"{job:16s} DOWN  {s.url}: {s.error}"]
    lines = [f"{job:16s} up    {s.url}"]
    batches = s.value("churn_batches_total")
    steps = ", ".join(f"{k} {v:.1f}" for k, v in s.by("churn_batch_step_seconds", "step").items())
    if not batches:
        lines.append("  batches         none yet")
    else:
        took = s.value("churn_batch_duration_seconds_sum")
        lines.append(
            f"  batches         {_n(batches)} (last #{_n(s.value('churn_last_batch_id'))}, "
            f"{_age(s.value('churn_last_batch_age_seconds'))} ago; "
            f"mean {(took or 0) / batches:.1f}s; last: {steps or '-'})"
        )
    lines.append(
        f"  rate            {_n(s.value('churn_input_rows_per_second'))} rows/s in, "
        f"{_n(s.value('churn_processed_rows_per_second'))} rows/s processed"
    )
    partitions = s.samples.get("churn_consumer_lag_records", [])
    if partitions:
        total = sum(v for _, v in partitions)
        each = ", ".join(
            f"{labels['topic']}[{labels['partition']}] {v:,.0f}"
            for labels, v in sorted(partitions, key=lambda p: (p[0]["topic"], p[0]["partition"]))
        )
        lines.append(f"  lag             {total:,.0f} records ({each})")
    elif (versions := s.value("churn_source_lag_versions")) is not None:
        lines.append(f"  lag             {versions:,.0f} table versions behind")
    else:
        lines.append("  lag             unknown (no batch yet)")
    if job == "stream_features":
        quarantined = s.by("churn_quarantined_records_total", "reason")
        reasons = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(quarantined.items()))
        lines.append(
            f"  records         {_n(s.value('churn_input_records_total'))} in: "
            f"{_n(s.value('churn_valid_records_total'))} valid, "
            f"{sum(quarantined.values()):,.0f} quarantined" + (f" ({reasons})" if reasons else "")
        )
        dq = s.by("churn_dq_violations_total", "check")
        lines.append(
            "  data quality    "
            + (", ".join(f"{k} {v:,.0f}" for k, v in sorted(dq.items())) or "no violations")
        )
        lines.append(
            f"  freshness       features as of {_age(s.value('churn_feature_age_seconds'))} ago, "
            f"event clock {_age(s.value('churn_event_clock_age_seconds'))} behind the wall clock"
        )
    else:
        models = s.samples.get("churn_model_version", [])
        model = ", ".join(f"{labels['model']} v{v:.0f}" for labels, v in models) or "none yet"
        bands = s.by("churn_scores_total", "band")
        lines.append(f"  model           {model}")
        lines.append(
            "  scores          "
            + ", ".join(f"{b} {bands.get(b, 0):,.0f}" for b in BANDS)
            + f"; {_n(s.value('churn_lapsed_total'))} lapsed; "
            f"{_n(s.value('churn_emitted_records_total'))} records emitted"
        )
    return lines


def screen(cfg: Config) -> tuple[list[str], bool]:
    """The status lines, and whether every configured job is up."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines, all_up = [f"churn pipeline status at {now}", ""], True
    for job in JOBS:
        url = endpoint(cfg, job)
        if url is None:
            lines.append(f"{job:16s} no endpoint (monitoring.metrics_port.{job} is 0)")
            continue
        s = scrape(url)
        all_up &= s.error is None
        lines += describe(job, s)
    return lines, all_up


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jobs.status",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument("--watch", type=float, metavar="S", help="print again every S seconds")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    while True:
        lines, all_up = screen(cfg)
        print("\n".join(lines), flush=True)
        if not args.watch:
            return 0 if all_up else 1
        time.sleep(args.watch)
        print()


if __name__ == "__main__":
    run(main, "status")
