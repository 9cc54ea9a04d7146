import json
import os
import time
from pathlib import Path

import pytest

from infra import class_archive, jars
from infra.config import load_config
from infra.spark import pin_utc, spark_conf


def test_local_session_gets_delta_and_the_fetched_jars():
    conf = spark_conf(load_config("local", environ={}), "app")
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.master"] == "local[2]"
    names = sorted(jars.artifact_name(p.rsplit("/", 1)[-1]) for p in conf["spark.jars"].split(","))
    assert {
        "delta-spark_4.2_2.13",
        "delta-storage",
        "spark-sql-kafka-0-10_2.13",
        "kafka-clients",
    } <= set(names)
    assert "churn-validator.jar" in names  # the validator's fast path (decision 44)
    # Nothing pyspark already ships goes on the classpath twice.
    assert not set(names) & jars.pyspark_jars()


def test_packages_replace_local_jars():
    cfg = load_config(
        "local", environ={"CHURN__SPARK__PACKAGES": "[io.delta:delta-spark_4.2_2.13:4.4.0]"}
    )
    conf = spark_conf(cfg, "app")
    assert conf["spark.jars.packages"] == "io.delta:delta-spark_4.2_2.13:4.4.0"
    assert "spark.jars" not in conf


def test_spark_submit_owns_master_and_jars(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")
    monkeypatch.setenv("PYSPARK_GATEWAY_SECRET", "x")
    conf = spark_conf(load_config("local", environ={}), "app")
    assert "spark.master" not in conf and "spark.jars" not in conf
    assert (
        conf["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    )


def test_missing_jars_say_how_to_fetch_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `make setup`"):
        jars.classpath("spark", tmp_path)


def test_artifact_name_strips_the_version():
    assert jars.artifact_name("jackson-core-2.13.5.jar") == "jackson-core"
    assert jars.artifact_name("delta-spark_4.2_2.13-4.4.0.jar") == "delta-spark_4.2_2.13"
    assert jars.artifact_name("RoaringBitmap-0.9.25.jar") == "RoaringBitmap"
    assert jars.artifact_name("spark-sql-kafka-0-10_2.13-4.2.0.jar") == "spark-sql-kafka-0-10_2.13"
    assert jars.artifact_name("zstd-jni-1.5.7-3.jar") == "zstd-jni"


def test_the_driver_maps_the_class_archive_make_setup_wrote():
    conf = spark_conf(load_config("local", environ={}), "app")
    archive, *rest = conf["spark.driver.extraJavaOptions"].split()
    assert archive.startswith("-XX:SharedArchiveFile=")
    assert Path(archive.split("=", 1)[1]).stat().st_size > 10 * 2**20
    assert rest == ["-Xss16m"]  # stream threads' stacks (decision 58)


def test_a_configured_driver_java_option_is_kept_beside_the_archive():
    cfg = load_config("local", environ={})
    mine = {"spark.driver.extraJavaOptions": "-Dchurn.probe=1"}
    cfg = cfg.model_copy(update={"spark": cfg.spark.model_copy(update={"conf": mine})})
    option = spark_conf(cfg, "app")["spark.driver.extraJavaOptions"]
    assert option.startswith("-XX:SharedArchiveFile=") and option.endswith(" -Dchurn.probe=1")


def test_a_light_jit_driver_compiles_with_c1_only_and_keeps_the_other_options(
    monkeypatch: pytest.MonkeyPatch,
):
    cfg = load_config("local", environ={})
    mine = {"spark.driver.extraJavaOptions": "-Dchurn.probe=1"}
    cfg = cfg.model_copy(update={"spark": cfg.spark.model_copy(update={"conf": mine})})
    option = spark_conf(cfg, "app", light_jit=True)["spark.driver.extraJavaOptions"].split()
    assert option[0].startswith("-XX:SharedArchiveFile=")
    assert option[1:] == ["-Xss16m", "-XX:TieredStopAtLevel=1", "-Dchurn.probe=1"]
    assert "TieredStopAtLevel" not in spark_conf(cfg, "app")["spark.driver.extraJavaOptions"]
    # Under spark-submit the driver's JVM runs already: its options are the command's.
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")
    monkeypatch.setenv("PYSPARK_GATEWAY_SECRET", "x")
    assert spark_conf(cfg, "app", light_jit=True)["spark.driver.extraJavaOptions"] == (
        "-Dchurn.probe=1"
    )


def test_an_archive_made_for_another_java_pyspark_or_jars_is_not_used(tmp_path, monkeypatch):
    folder = class_archive.archive_dir(tmp_path)
    folder.mkdir()
    (folder / class_archive.ARCHIVE).write_bytes(b"archive")
    now = {"java": "/usr/lib/jvm/17/bin/java", "pyspark": "4.2.0", "jars": ["a.jar"]}
    monkeypatch.setattr(class_archive, "fingerprint", lambda _dir: dict(now))
    (folder / class_archive.STAMP).write_text(json.dumps(now))
    assert (
        class_archive.java_options(tmp_path)
        == f"-XX:SharedArchiveFile={folder / 'spark-driver.jsa'}"
    )
    for key, other in (("java", "/opt/jdk21/bin/java"), ("pyspark", "4.2.1"), ("jars", ["b.jar"])):
        (folder / class_archive.STAMP).write_text(json.dumps({**now, key: other}))
        assert class_archive.java_options(tmp_path) is None, key
    (folder / class_archive.STAMP).unlink()
    assert class_archive.java_options(tmp_path) is None


def test_the_fingerprint_moves_when_a_jar_is_rewritten(tmp_path, monkeypatch):
    """The JVM refuses an archive whose classpath jars changed size or time (and loads every
    class again): such a jar must make the archive stale, so that `make setup` writes it anew."""
    if class_archive.fingerprint(jars.DEFAULT_JARS_DIR) is None:
        pytest.skip("needs java and the Spark jars (make setup)")
    jar = tmp_path / "connector.jar"
    jar.write_bytes(b"jar")
    monkeypatch.setattr(jars, "spark_classpath", lambda _dir: [jar])
    before = class_archive.fingerprint(tmp_path)
    assert before == class_archive.fingerprint(tmp_path)
    os.utime(jar, (jar.stat().st_atime, jar.stat().st_mtime + 5))
    touched = class_archive.fingerprint(tmp_path)
    assert touched != before
    jar.write_bytes(b"jar, rebuilt")
    os.utime(jar, (jar.stat().st_atime, int(jar.stat().st_mtime)))
    assert class_archive.fingerprint(tmp_path) not in (before, touched)


def test_sessions_and_processes_run_in_utc(monkeypatch):
    """Decision 53: the session, the executors' Python workers and the driver's process."""
    conf = spark_conf(load_config("local", environ={}), "app")
    assert conf["spark.sql.session.timeZone"] == conf["spark.executorEnv.TZ"] == "UTC"
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert time.localtime(0).tm_hour == 5  # 05:30 in Kolkata
        pin_utc()
        assert os.environ["TZ"] == "UTC" and time.localtime(0).tm_hour == 0
    finally:
        monkeypatch.undo()
        time.tzset()
