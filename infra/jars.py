"""Fetch the JVM artifacts the project runs on, with Maven, into a git-ignored folder.

Two separate classpaths, because they must not mix:
- ``kafka``: the Apache Kafka broker (KRaft) and its command-line tools (jvm/kafka/pom.xml);
- ``spark``: Spark's Kafka connector and Delta Lake (jvm/spark/pom.xml), minus every jar
  that pyspark already ships (Jackson, Hadoop, Parquet, Scala, logging...), so the driver
  never sees two versions of one library.

Idempotent: a folder whose stamp matches its pom's hash is left alone, so a second
``make setup`` runs no Maven and downloads nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
POMS = {
    "kafka": REPO_ROOT / "jvm" / "kafka" / "pom.xml",
    "spark": REPO_ROOT / "jvm" / "spark" / "pom.xml",
}
DEFAULT_JARS_DIR = REPO_ROOT / ".local" / "jars"
STAMP = ".pom.sha256"

# Jars that carry the same classes as a pyspark jar under another artifact name.
_ALSO_IN_PYSPARK = {"shims"}  # RoaringBitmap 0.9's shims; RoaringBitmap 1.x contains them
_VERSION_SUFFIX = re.compile(r"-\d[^-_]*(-[\w.]+)?\.jar$")


def artifact_name(jar: str) -> str:
    """'jackson-core-2.13.5.jar' -> 'jackson-core'."""
    return _VERSION_SUFFIX.sub("", jar)


def pyspark_jars() -> set[str]:
    import pyspark

    return {artifact_name(p.name) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}


def _pom_hash(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def is_current(name: str, jars_dir: Path = DEFAULT_JARS_DIR) -> bool:
    stamp = jars_dir / name / STAMP
    return stamp.exists() and stamp.read_text().strip() == _pom_hash(POMS[name])


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
        if name == "spark":
            provided = pyspark_jars() | _ALSO_IN_PYSPARK
            for jar in staging.glob("*.jar"):
                if artifact_name(jar.name) in provided:
                    jar.unlink()
        (staging / STAMP).write_text(_pom_hash(POMS[name]))
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), target)
    print(f"jars: {name}: {len(list(target.glob('*.jar')))} jars in {target}")
    return target


def classpath(name: str, jars_dir: Path = DEFAULT_JARS_DIR) -> list[Path]:
    """The jar files of one fetched classpath; a clear error when ``make setup`` has not run."""
    if not is_current(name, jars_dir):
        raise FileNotFoundError(
            f"{name} jars missing or stale in {jars_dir / name}: run `make setup` "
            f"(or `python -m infra.jars`)"
        )
    return sorted((jars_dir / name).glob("*.jar"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m infra.jars",
        description="Fetch the Kafka broker and the Spark Kafka/Delta jars from Maven Central.",
    )
    parser.add_argument(
        "--jars-dir", type=Path, default=DEFAULT_JARS_DIR, help="default: %(default)s"
    )
    parser.add_argument(
        "--print-spark-jars",
        action="store_true",
        help="print the Spark connector jars comma-separated (for spark-submit --jars)",
    )
    args = parser.parse_args(argv)
    if args.print_spark_jars:
        print(",".join(str(p) for p in classpath("spark", args.jars_dir)))
        return
    for name in POMS:
        fetch(name, args.jars_dir)


if __name__ == "__main__":
    main()
