"""Send a job to a Spark cluster with spark-submit (`make submit JOB=... ARGS=...`).

The project travels as a built artifact: a wheel built from this checkout (into
.local/dist), given to ``--py-files``. The JVM dependencies travel as ``--jars``: Spark's
Kafka connector and Delta, the event validator's fast path, and hadoop-aws with the AWS SDK
when storage is on s3a://. The driver and the executors run ``.local/cluster-python``, a
Python with the project's dependencies but without the project (a cluster's image or packed
environment plays that part), so every module of ours that the job's entry script
(jobs/<job>.py, which spark-submit takes as a file) imports comes from the wheel
(docs/decisions.md 65).

  make cluster-up                                   # a master and two workers on 127.0.0.1
  python -m infra.submit stream_features --available-now
  python -m infra.submit --config cluster train
  python -m infra.submit --master spark://spark-master:7077 --dry-run score_batch

The master: ``--master``, else $SPARK_MASTER, else the one `make cluster-up` starts.
Everything after the job's name goes to the job; ``--config`` goes to both.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import venv
from pathlib import Path

from infra.cli import UsageError, add_config_arguments, run
from infra.config import REPO_ROOT, Config, config_path, load_config
from infra.spark import IVY_SETTINGS, LIGHT_JIT, THREAD_STACK, job_jars

JOBS = ("stream_features", "stream_scores", "train", "score_batch", "backfill_features")
PACKAGES = ("infra", "features", "training", "jobs", "sources", "store", "scoring")
DIST = REPO_ROOT / ".local" / "dist"
CLUSTER_PYTHON = REPO_ROOT / ".local" / "cluster-python"


KEEP_BUILDS = 3
"""Wheels of earlier sources kept: a running job's driver and new executors still read the
one it was submitted with."""


def _source_hash(root: Path) -> str:
    h = hashlib.sha256((root / "pyproject.toml").read_bytes())
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _shipped(build: Path) -> Path | None:
    found = sorted(build.glob("churn_pipeline-*.zip"))
    return found[0] if len(found) == 1 else None


def build_wheel(dist: Path = DIST) -> Path:
    """The project's wheel for the sources as they are, built with pip (no build isolation:
    the venv's setuptools, no index needed) from a copy of them, so no build/ or egg-info is
    left in the checkout, into ``dist/<the copy's hash>/``; and beside it a copy named .zip,
    which this returns: pyspark puts only .zip, .egg and .jar files of --py-files on the
    executors' sys.path, and a pure-Python wheel is a zip of the packages at its root.
    Submits started together build it once (a lock); the last KEEP_BUILDS builds stay."""
    dist.mkdir(parents=True, exist_ok=True)
    with (dist / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = _shipped(dist / _source_hash(REPO_ROOT))
        if current is not None:
            return current
        print("submit: building the project's wheel...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "src", Path(tmp) / "out"
            src.mkdir()
            for name in ("pyproject.toml", "README.md", "LICENSE"):
                shutil.copy2(REPO_ROOT / name, src / name)
            for package in PACKAGES:
                shutil.copytree(
                    REPO_ROOT / package,
                    src / package,
                    ignore=shutil.ignore_patterns("__pycache__"),
                )
            subprocess.run(
                [
                    *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"),
                    *("--no-build-isolation", "-w", str(out), str(src)),
                ],
                check=True,
            )
            (wheel,) = out.glob("churn_pipeline-*.whl")
            shutil.copy2(wheel, out / wheel.with_suffix(".zip").name)
            build = dist / _source_hash(src)  # what was built, were a file edited meanwhile
            if not build.exists():
                shutil.move(out, build)
        builds = sorted((d for d in dist.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
        for old in builds[:-KEEP_BUILDS]:
            if old != build:
                shutil.rmtree(old)
    shipped = _shipped(build)
    assert shipped is not None, build
    return shipped


def cluster_python(target: Path = CLUSTER_PYTHON) -> Path:
    """A Python with this venv's packages but not the project: a venv whose site-packages
    holds one .pth line naming this venv's site-packages. Python reads .pth files only in
    its own site dirs, so the editable install's finder (a .pth of this venv) never runs
    there, and ``import infra`` works only from the wheel. Made once, under a lock: jobs
    submitted together never see it half-made."""
    python = target / "bin" / "python"
    line = sysconfig.get_paths()["purelib"] + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".cluster-python.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not python.exists():
            venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
        site = subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
        pth = Path(site) / "churn-dependencies.pth"
        if not pth.exists() or pth.read_text() != line:
            tmp = pth.with_suffix(".tmp")
            tmp.write_text(line)
            os.replace(tmp, pth)
    return python


def default_master(cfg: Config) -> str:
    """$SPARK_MASTER, else the standalone master `make cluster-up` starts."""
    from infra.stack import Stack
    from infra.stack_spark import master_url

    return os.environ.get("SPARK_MASTER") or master_url(Stack.from_config(cfg))


def command(
    cfg: Config,
    config_file: Path,
    job: str,
    job_args: list[str],
    *,
    master: str,
    wheel: Path,
    python: Path,
    cores: int | None = None,
) -> list[str]:
    """The spark-submit command line that runs ``job`` on ``master``."""
    from infra.stack_spark import spark_home

    files, packages = job_jars(cfg)
    # The driver's JVM options are the command's (infra/spark.py sets them only for a local
    # driver): the stack size a failing batch's traceback needs (decision 58), and for the
    # scorer the C1-only JIT (decision 49).
    java_options = [THREAD_STACK, *([LIGHT_JIT] if job == "stream_scores" else [])]
    return [
        str(spark_home() / "bin" / "spark-submit"),
        *("--master", master),
        *("--py-files", str(wheel)),
        *(("--jars", ",".join(str(p) for p in files)) if files else ()),
        *(("--packages", ",".join(packages)) if packages else ()),
        *(("--conf", f"spark.jars.ivySettings={IVY_SETTINGS}") if packages else ()),
        *("--driver-memory", cfg.spark.driver_memory),
        *("--conf", f"spark.pyspark.python={python}"),
        *("--conf", f"spark.pyspark.driver.python={python}"),
        *("--driver-java-options", " ".join(java_options)),
        *(("--total-executor-cores", str(cores)) if cores else ()),
        str(REPO_ROOT / "jobs" / f"{job}.py"),
        *("--config", str(config_file.resolve())),
        *job_args,
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m infra.submit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument("--master", help="the cluster's master URL (default: see above)")
    p.add_argument(
        "--cores",
        type=int,
        help="cores the job may take from the cluster (--total-executor-cores; default: all "
        "free ones, so give each of two concurrent streaming jobs its share)",
    )
    p.add_argument(
        "--python",
        type=Path,
        help="the Python of the driver and the executors, with the project's dependencies "
        f"(default: {CLUSTER_PYTHON.relative_to(REPO_ROOT)}, made from this venv)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    p.add_argument("job", choices=JOBS, help="the job to run")
    p.add_argument("job_args", nargs=argparse.REMAINDER, help="the job's own arguments")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if any(a == "--config" or a.startswith("--config=") for a in args.job_args):
        raise UsageError("give --config before the job's name: it is submit's and the job's")
    cfg = load_config(args.config)
    master = args.master or default_master(cfg)
    cmd = command(
        cfg,
        config_path(args.config),
        args.job,
        args.job_args,
        master=master,
        wheel=build_wheel(),
        python=args.python or cluster_python(),
        cores=args.cores,
    )
    print("submit: " + shlex.join(cmd), file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    env = os.environ.copy()
    if master.startswith(("spark://127.0.0.1:", "spark://localhost:")):
        env["SPARK_LOCAL_IP"] = "127.0.0.1"  # the driver listens where the executors are
    # Relative paths in the config resolve against the checkout (decision 65).
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env).returncode


if __name__ == "__main__":
    run(main, "submit")
