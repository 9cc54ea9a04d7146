"""The Spark driver's class archive: JVM start-up without loading the same classes every time.

Every local Spark driver this project starts (the jobs, the demo, the tests) loads and
verifies some 20,000 classes from jar files before it does any work. A dynamic AppCDS
archive (Java 17's ``-XX:ArchiveClassesAtExit``) holds them pre-parsed, and the JVM maps it
at start. ``make setup`` writes one by running a small pipeline workload: a micro-batch
into a scratch feature store (the validator's JVM fast path, the Python validator, the
Delta appends), a point-in-time training set, a Change Data Feed read. The session builder
adds ``-XX:SharedArchiveFile`` only when the archive was made by this Java, this pyspark
and these jars (docs/decisions.md, decision 47).

  python -m infra.class_archive            # build it when missing or stale (make setup)
  python -m infra.class_archive --check    # say whether the session builder will use it
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from infra import jars

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from infra.config import Config

ARCHIVE = "spark-driver.jsa"
STAMP = ".stamp.json"


def _java() -> Path | None:
    """The java that pyspark launches: $JAVA_HOME/bin/java, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).exists() else None


def _files(paths: list[Path]) -> list[list[object]]:
    """Name, size and modification time (whole seconds) of each file: what the JVM checks
    of every jar on the classpath before it maps an archive (it refuses one whose jars
    changed, with a warning, and loads every class again)."""
    return [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in paths]


def fingerprint(jars_dir: Path) -> dict[str, object] | None:
    """What the archive is valid for: the JVM binary, pyspark's version and jars, the
    project's Spark jars, each jar by name, size and modification time. None without a java
    or the Spark jars. Cheap: no process is started."""
    java = _java()
    if java is None:
        return None
    libjvm = java.parents[1] / "lib" / "server" / "libjvm.so"
    jvm_id = libjvm if libjvm.exists() else java
    import pyspark

    try:
        project_jars = _files(jars.spark_classpath(jars_dir))
    except FileNotFoundError:
        return None
    pyspark_jars = json.dumps(_files(jars.pyspark_jar_files()))
    return {
        "java": str(java),
        "jvm": [jvm_id.stat().st_size, int(jvm_id.stat().st_mtime)],
        "pyspark": pyspark.__version__,
        "pyspark_jars": hashlib.sha256(pyspark_jars.encode()).hexdigest(),
        "jars": project_jars,
    }


def archive_dir(jars_dir: Path) -> Path:
    return jars_dir / "cds"


def current_archive(jars_dir: Path) -> Path | None:
    """The archive when it matches this machine's java, pyspark and jars; else None."""
    folder = archive_dir(jars_dir)
    archive, stamp = folder / ARCHIVE, folder / STAMP
    if not archive.exists() or not stamp.exists():
        return None
    try:
        recorded = json.loads(stamp.read_text())
    except ValueError:
        return None
    return archive if recorded == fingerprint(jars_dir) else None


def java_options(jars_dir: Path) -> str | None:
    """The driver JVM option that maps the archive, or None when there is no current one."""
    archive = current_archive(jars_dir)
    return f"-XX:SharedArchiveFile={archive}" if archive else None


def build(jars_dir: Path) -> Path | None:
    """Write the archive when missing or stale; None (with a warning) when it cannot be."""
    if current_archive(jars_dir):
        print(f"cds: class archive up to date ({archive_dir(jars_dir) / ARCHIVE})")
        return archive_dir(jars_dir) / ARCHIVE
    stamp = fingerprint(jars_dir)
    if stamp is None:
        print("cds: WARNING no java or no Spark jars: no class archive", file=sys.stderr)
        return None
    folder = archive_dir(jars_dir)
    folder.mkdir(parents=True, exist_ok=True)
    print(
        "cds: writing the Spark driver's class archive (a small pipeline run, about 90 s, once)..."
    )
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        staging = Path(tmp) / ARCHIVE
        log = folder / "build.log"
        with log.open("w") as out:
            result = subprocess.run(
                [sys.executable, "-m", "infra.class_archive", "--workload", str(staging)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=jars.REPO_ROOT,
            )
        if result.returncode != 0 or not staging.exists():
            print(
                f"cds: WARNING the class archive was not written (exit {result.returncode}; "
                f"see {log}): Spark starts as before, without it",
                file=sys.stderr,
            )
            return None
        staging.replace(folder / ARCHIVE)
    (folder / STAMP).write_text(json.dumps(stamp, indent=2))
    size = (folder / ARCHIVE).stat().st_size / 2**20
    print(f"cds: class archive {folder / ARCHIVE} ({size:.0f} MiB) in {time.monotonic() - t0:.0f}s")
    return folder / ARCHIVE


def _workload(target: Path) -> None:
    """Run in a driver started with -XX:ArchiveClassesAtExit=target, then let it exit."""
    from infra.config import load_config
    from infra.spark import build_spark

    cfg = load_config("local")
    dump = {"spark.driver.extraJavaOptions": f"-XX:ArchiveClassesAtExit={target} -Xlog:cds=error"}
    spark_cfg = cfg.spark.model_copy(update={"conf": {**cfg.spark.conf, **dump}})
    spark = build_spark(cfg.model_copy(update={"spark": spark_cfg}), app_name="class-archive")
    with tempfile.TemporaryDirectory() as tmp:
        _pipeline_run(spark, cfg, Path(tmp))
    # The JVM writes the archive when it exits: pyspark's gateway exits when its stdin closes.
    proc = spark.sparkContext._gateway.proc  # type: ignore[union-attr]
    proc.stdin.close()
    proc.wait(timeout=600)


def _pipeline_run(spark: SparkSession, cfg: Config, scratch: Path) -> None:
    """Two feature-store micro-batches (the second repeats the first: duplicates), a
    point-in-time training set and a Change Data Feed read, on a scratch warehouse."""
    import itertools

    from pyspark.sql import functions as F

    from jobs.stream_features import ingest_rules
    from sources.simulator import SimulationConfig, simulate
    from store.backfill import KAFKA_SCHEMA
    from store.ingest import process_batch
    from store.tables import FeatureStore
    from training.dataset import daily_columns, training_set

    events = itertools.islice(simulate(SimulationConfig(n_users=300, days=60, seed=1)), 30_000)
    records = [
        (e["user_id"].encode(), json.dumps(e, separators=(",", ":")).encode()) for e in events
    ]
    records += [(b"u-bad", b"{not json"), (None, b'{"event_id": "x"}')]
    now = datetime.now(UTC)
    rows = [
        (key, value, "class-archive", n % 2, n // 2, now) for n, (key, value) in enumerate(records)
    ]
    raw = spark.createDataFrame(rows, KAFKA_SCHEMA)
    store = FeatureStore(str(scratch / "warehouse"))
    rules = ingest_rules(cfg)
    for batch_id, part in enumerate((raw.where(F.col("offset") < 5_000), raw)):
        process_batch(spark, store, part, batch_id, rules, "class-archive")
    daily = daily_columns(store.read(spark, "user_activity_daily"))
    first: date = daily.agg(F.min("activity_date")).collect()[0][0]
    cutoffs = [first + timedelta(days=d) for d in (28, 35)]
    training_set(daily, cutoffs, lookback_days=28, horizon_days=14).toArrow()
    (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", 0)
        .load(store.path("user_features"))
        .toArrow()
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m infra.class_archive",
        description="Write (when missing or stale) the class archive every local Spark "
        "driver of this project starts with.",
    )
    parser.add_argument(
        "--jars-dir", type=Path, default=jars.DEFAULT_JARS_DIR, help="default: %(default)s"
    )
    parser.add_argument(
        "--check", action="store_true", help="print whether Spark drivers will use the archive"
    )
    parser.add_argument("--workload", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workload:
        _workload(args.workload)
    elif args.check:
        opt = java_options(args.jars_dir)
        print(f"cds: drivers start with {opt}" if opt else "cds: no current class archive")
    else:
        build(args.jars_dir)


if __name__ == "__main__":
    main()
