"""Fetch the JVM artifacts the project runs on, with Maven, into a git-ignored folder.

Separate classpaths, because they must not mix:
- ``kafka``: the Apache Kafka broker (KRaft) and its command-line tools (jvm/kafka/pom.xml);
- ``spark``: Spark's Kafka connector and Delta Lake (jvm/spark/pom.xml), minus every jar
  that pyspark already ships (Jackson, Hadoop, Parquet, Scala, logging...), so the driver
  never sees two versions of one library;
- ``s3``: hadoop-aws and the AWS SDK modules it needs for s3a:// (jvm/s3/pom.xml), minus
  pyspark's jars too; a job adds them when its storage is on s3a:// (infra/spark.py);
- ``s3proxy``: the local stack's S3-compatible object store (jvm/s3proxy/pom.xml).

Beside them, one jar of our own, ``validator``: the event validator's JVM fast path
(jvm/validator, docs/decisions.md, decision 44), compiled with ``javac`` against
pyspark's jars. Without a JDK it is skipped with a warning: the Python validator then
checks every record, slower but with the same verdicts.

Idempotent: a folder whose stamp matches its pom's (or sources') hash is left alone, so a
second ``make setup`` runs no Maven and downloads nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
POMS = {
    "kafka": REPO_ROOT / "jvm" / "kafka" / "pom.xml",
    "spark": REPO_ROOT / "jvm" / "spark" / "pom.xml",
    "s3": REPO_ROOT / "jvm" / "s3" / "pom.xml",
    "s3proxy": REPO_ROOT / "jvm" / "s3proxy" / "pom.xml",
}
# Classpaths that join pyspark's JVM: whatever pyspark ships is dropped from them.
_BESIDE_PYSPARK = {"spark", "s3"}
VALIDATOR_SOURCES = REPO_ROOT / "jvm" / "validator"
VALIDATOR_JAR = "churn-validator.jar"
DEFAULT_JARS_DIR = REPO_ROOT / ".local" / "jars"
STAMP = ".pom.sha256"

# Jars that carry the same classes as a pyspark jar under another artifact name.
_ALSO_IN_PYSPARK = {"shims"}  # RoaringBitmap 0.9's shims; RoaringBitmap 1.x contains them
_VERSION_SUFFIX = re.compile(r"-\d[^-_]*(-[\w.]+)?\.jar$")


def artifact_name(jar: str) -> str:
    """'jackson-core-2.13.5.jar' -> 'jackson-core'."""
    return _VERSION_SUFFIX.sub("", jar)


def pyspark_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def pyspark_jar_files() -> list[Path]:
    """The jars pyspark ships (its JVM's classpath), in name order."""
    return sorted((pyspark_dir() / "jars").glob("*.jar"))


def pyspark_jars() -> set[str]:
    return {artifact_name(p.name) for p in pyspark_jar_files()}


def _source_hash(name: str) -> str:
    """What a folder was made from: its pom, or the validator's sources and pyspark's version."""
    digest = hashlib.sha256()
    if name in POMS:
        digest.update(POMS[name].read_bytes())
    else:
        import pyspark

        digest.update(pyspark.__version__.encode())
        for source in sorted(VALIDATOR_SOURCES.rglob("*.java")):
            digest.update(str(source.relative_to(VALIDATOR_SOURCES)).encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()


def is_current(name: str, jars_dir: Path = DEFAULT_JARS_DIR) -> bool:
    stamp = jars_dir / name / STAMP
    return stamp.exists() and stamp.read_text().strip() == _source_hash(name)


def fetch(name: str, jars_dir: Path = DEFAULT_JARS_DIR) -> Path:
    """Resolve one classpath with Maven into ``jars_dir/name``; no-op when already current."""
    target = jars_dir / name
    if is_current(name, jars_dir):
        print(f"jars: {name} up to date ({len(list(target.glob('*.jar')))} jars in {target})")
        return target
    print(f"jars: resolving {name} classpath with Maven ({POMS[name].relative_to(REPO_ROOT)})...")
    with tempfile.TemporaryDirectory(
        dir=jars_dir.parent if jars_dir.parent.exists() else None
    ) as tmp:
        staging = Path(tmp) / name
        cmd = [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POMS[name]),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
            raise SystemExit(
                f"jars: Maven could not resolve {POMS[name]} (exit {result.returncode})"
            )
        if name in _BESIDE_PYSPARK:
            provided = pyspark_jars() | _ALSO_IN_PYSPARK
            for jar in staging.glob("*.jar"):
                if artifact_name(jar.name) in provided:
                    jar.unlink()
        _install(staging, target, name)
    print(f"jars: {name}: {len(list(target.glob('*.jar')))} jars in {target}")
    return target


def _install(staging: Path, target: Path, name: str) -> None:
    (staging / STAMP).write_text(_source_hash(name))
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), target)


def build_validator(jars_dir: Path = DEFAULT_JARS_DIR) -> Path | None:
    """Compile jvm/validator into ``jars_dir/validator``; None (with a warning) without javac."""
    target = jars_dir / "validator"
    if is_current("validator", jars_dir):
        print(f"jars: validator up to date ({target / VALIDATOR_JAR})")
        return target / VALIDATOR_JAR
    javac = shutil.which("javac")
    if javac is None:
        print(
            "jars: WARNING no javac on PATH (a JDK 17 has it): the event validator's JVM fast "
            "path is not built, so the Python validator checks every record (same verdicts, "
            "about 3 times the parse time)",
            file=sys.stderr,
        )
        return None
    print("jars: compiling the event validator's fast path (jvm/validator)...")
    sources = sorted(str(p) for p in VALIDATOR_SOURCES.rglob("*.java"))
    with tempfile.TemporaryDirectory(
        dir=jars_dir.parent if jars_dir.parent.exists() else None
    ) as tmp:
        classes, staging = Path(tmp) / "classes", Path(tmp) / "validator"
        staging.mkdir()
        spark_jars = sorted(str(p) for p in (pyspark_dir() / "jars").glob("*.jar"))
        cmd = [javac, "--release", "17", "-Xlint:all,-path", "-Werror", "-d", str(classes)]
        result = subprocess.run(
            [*cmd, "-cp", ":".join(spark_jars), *sources], capture_output=True, text=True
        )
        if result.returncode != 0:
            sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
            raise SystemExit(f"jars: javac could not compile {VALIDATOR_SOURCES}")
        with zipfile.ZipFile(staging / VALIDATOR_JAR, "w", zipfile.ZIP_DEFLATED) as jar:
            for compiled in sorted(classes.rglob("*.class")):
                jar.write(compiled, compiled.relative_to(classes).as_posix())
        _install(staging, target, "validator")
    print(f"jars: validator: {target / VALIDATOR_JAR}")
    return target / VALIDATOR_JAR


def classpath(name: str, jars_dir: Path = DEFAULT_JARS_DIR) -> list[Path]:
    """The jar files of one fetched classpath; a clear error when ``make setup`` has not run."""
    if not is_current(name, jars_dir):
        raise FileNotFoundError(
            f"{name} jars missing or stale in {jars_dir / name}: run `make setup` "
            f"(or `python -m infra.jars`)"
        )
    return sorted((jars_dir / name).glob("*.jar"))


def spark_classpath(jars_dir: Path = DEFAULT_JARS_DIR) -> list[Path]:
    """Every jar a Spark application of this project needs: the connectors, and the
    validator's fast path when it was built (without it the Python validator does all)."""
    validator = jars_dir / "validator" / VALIDATOR_JAR
    mine = [validator] if is_current("validator", jars_dir) else []
    return classpath("spark", jars_dir) + mine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m infra.jars",
        description="Fetch the Kafka broker and the Spark Kafka/Delta jars from Maven Central; "
        "compile the event validator's fast path.",
    )
    parser.add_argument(
        "--jars-dir", type=Path, default=DEFAULT_JARS_DIR, help="default: %(default)s"
    )
    parser.add_argument(
        "--print-spark-jars",
        action="store_true",
        help="print the Spark jars comma-separated (for spark-submit --jars)",
    )
    args = parser.parse_args(argv)
    if args.print_spark_jars:
        print(",".join(str(p) for p in spark_classpath(args.jars_dir)))
        return
    for name in POMS:
        fetch(name, args.jars_dir)
    build_validator(args.jars_dir)


if __name__ == "__main__":
    main()
