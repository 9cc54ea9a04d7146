"""The one SparkSession builder every job and test uses.

It configures Delta Lake (SQL extension and catalog) and puts Spark's Kafka connector and
Delta on the classpath: the jars `make setup` fetched, or ``spark.packages`` (Maven
coordinates) when configured. Under ``spark-submit`` the master and the jars belong to the
submit command line (``--master``, ``--jars``), so they are left alone there.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from pyspark.sql import SparkSession

from infra import class_archive, jars
from infra.config import REPO_ROOT, Config

# Maven Central only, for spark.packages (jvm/ivysettings.xml says why).
IVY_SETTINGS = REPO_ROOT / "jvm" / "ivysettings.xml"

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


# Commits between Delta checkpoints on every table this project creates (Delta's default: 10).
CHECKPOINT_INTERVAL = 100

# The JIT of a local driver whose work is orchestration (small Spark jobs, Delta commits):
# C1 only. With C2 as well, the scorer's JVM spent more CPU compiling than running, beside
# the feature stream on the same two cores (docs/decisions.md, decision 49).
LIGHT_JIT = "-XX:TieredStopAtLevel=1"

# Java threads' stacks on a local driver (the JVM's default: 1 MiB). A streaming batch
# that fails in Python hands Spark a long traceback, which Spark matches against a
# regular expression that recurses once per character: at 1 and 4 MiB that overflowed the
# stream thread's stack and printed a thousand lines; 8 MiB was enough (decision 58).
THREAD_STACK = "-Xss16m"


def under_spark_submit() -> bool:
    """True when spark-submit launched this Python driver (it hands us a running JVM)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ and "PYSPARK_GATEWAY_SECRET" in os.environ


def local_driver(cfg: Config) -> bool:
    """True when this process starts its own driver JVM for a local master: its JVM options,
    host and environment are ours to set (under spark-submit they are the command's)."""
    return not under_spark_submit() and (cfg.spark.master or "local").startswith("local")


def on_s3a(cfg: Config) -> bool:
    """A storage location is on s3a:// (the jobs then need the s3 jars, infra/jars.py)."""
    return any(loc.startswith("s3a://") for loc in (cfg.storage.warehouse, cfg.storage.checkpoints))


def job_jars(cfg: Config) -> tuple[list[Path], list[str]]:
    """A job's JVM dependencies, as (jar files, Maven coordinates): ``spark.packages`` when
    configured, else the jars `make setup` fetched (the connectors, the validator's fast
    path, and hadoop-aws with the AWS SDK only when storage is on s3a://)."""
    if cfg.spark.packages:
        return [], list(cfg.spark.packages)
    jar_dir = Path(cfg.resolve(cfg.spark.jars_dir))
    classpath = jars.spark_classpath(jar_dir)
    if on_s3a(cfg):
        classpath += jars.classpath("s3", jar_dir)
    return classpath, []


def spark_conf(cfg: Config, app_name: str, *, light_jit: bool = False) -> dict[str, str]:
    """Every Spark setting the session gets, as plain strings (testable without a JVM).

    ``light_jit``: a local driver compiles with C1 only (LIGHT_JIT); under spark-submit the
    driver's JVM is already running, and its options belong to the submit command."""
    conf: dict[str, str] = {
        "spark.app.name": app_name,
        "spark.sql.session.timeZone": "UTC",
        # Executors' Python workers on a cluster: the zone pin_utc gives the driver.
        "spark.executorEnv.TZ": "UTC",
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.ui.enabled": str(cfg.spark.ui_enabled).lower(),
        # Small local micro-batches: adaptive coalescing would only add planning time.
        "spark.sql.streaming.noDataMicroBatches.enabled": "false",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Tables the streams append to every second: a checkpoint every 10th commit cost
        # 1.5-2 s in the committing batch (docs/decisions.md, decision 29).
        "spark.databricks.delta.properties.defaults.checkpointInterval": str(CHECKPOINT_INTERVAL),
        **DELTA_CONF,
    }
    if not under_spark_submit():
        if cfg.spark.master:
            conf["spark.master"] = cfg.spark.master
        if local_driver(cfg):
            # A local driver serves only this machine: listen on loopback, not on eth0.
            conf["spark.driver.host"] = "127.0.0.1"
            conf["spark.driver.bindAddress"] = "127.0.0.1"
        conf["spark.driver.memory"] = cfg.spark.driver_memory
        files, packages = job_jars(cfg)
        if packages:
            conf["spark.jars.packages"] = ",".join(packages)
            conf["spark.jars.ivySettings"] = str(IVY_SETTINGS)
        else:
            conf["spark.jars"] = ",".join(str(p) for p in files)
    conf.update(cfg.spark.conf)
    if local_driver(cfg):
        # The driver maps the classes `make setup` archived (docs/decisions.md, decision 47).
        archive = class_archive.java_options(Path(cfg.resolve(cfg.spark.jars_dir)))
        options = [archive, THREAD_STACK, LIGHT_JIT if light_jit else None]
        options.append(conf.get("spark.driver.extraJavaOptions"))
        if any(options):
            conf["spark.driver.extraJavaOptions"] = " ".join(o for o in options if o)
    return conf


def pin_utc() -> None:
    """Make this process's local time zone UTC, as the session's is (docs/decisions.md 53).

    PySpark reads a datetime without a zone as local time when it builds a DataFrame, and
    ``collect()`` hands timestamps back as local ones: on a machine set to another zone
    each round trip through Spark would shift them. A local driver's JVM and its Python
    workers, started after this, inherit the zone too."""
    if os.environ.get("TZ") != "UTC":
        os.environ["TZ"] = "UTC"
        time.tzset()


def build_spark(cfg: Config, app_name: str, *, light_jit: bool = False) -> SparkSession:
    """Build (or return the running) SparkSession with Delta and the Kafka connector;
    ``light_jit`` as in spark_conf."""
    pin_utc()
    if local_driver(cfg):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # read by the JVM at launch
        # The event validator runs in Python workers (features/events.py): this interpreter.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in spark_conf(cfg, app_name, light_jit=light_jit).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
