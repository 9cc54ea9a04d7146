"""`make submit` (infra/submit.py): the wheel it ships, the Python it runs, the command it
builds. The jobs themselves run on a real standalone cluster in
tests/integration/test_cluster_stack.py."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from infra import submit
from infra.cli import UsageError
from infra.config import REPO_ROOT, load_config


@pytest.fixture(scope="module")
def wheel() -> Path:
    return submit.build_wheel()


def test_the_wheel_holds_every_package_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == set(submit.PACKAGES)
    assert "infra/config.py" in names and "jobs/stream_scores.py" in names
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
    # built once per source: the same file again, untouched
    mtime = wheel.stat().st_mtime_ns
    assert submit.build_wheel() == wheel and wheel.stat().st_mtime_ns == mtime


def test_the_cluster_python_imports_the_project_from_the_wheel_only(wheel, tmp_path):
    python = submit.cluster_python()

    def where(*env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["env", *env, str(python), "-c", "import infra.config as c; print(c.REPO_ROOT)"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    assert "No module named 'infra'" in where().stderr
    # From the wheel, relative paths resolve against the working directory (decision 65).
    from_wheel = where(f"PYTHONPATH={wheel}")
    assert from_wheel.returncode == 0, from_wheel.stderr
    assert Path(from_wheel.stdout.strip()) == tmp_path
    # Its dependencies are this venv's.
    deps = subprocess.run([str(python), "-c", "import lightgbm, mlflow, pyspark"], cwd=tmp_path)
    assert deps.returncode == 0


def test_the_command_ships_the_wheel_the_jars_and_the_config(tmp_path):
    cfg = load_config("local")
    wheel, python = tmp_path / "p.zip", tmp_path / "python"
    cmd = submit.command(
        cfg,
        REPO_ROOT / "conf" / "local.yaml",
        "stream_scores",
        ["--available-now"],
        master="spark://127.0.0.1:7077",
        wheel=wheel,
        python=python,
        cores=1,
    )
    opts = dict(zip(cmd[1:-4:2], cmd[2:-4:2], strict=True))
    assert opts["--master"] == "spark://127.0.0.1:7077" and opts["--py-files"] == str(wheel)
    assert opts["--total-executor-cores"] == "1"
    assert opts["--driver-memory"] == cfg.spark.driver_memory  # spark_conf leaves it to us
    assert opts["--driver-java-options"] == "-Xss16m -XX:TieredStopAtLevel=1"
    jars = opts["--jars"].split(",")
    assert any("delta-spark" in j for j in jars) and not any("hadoop-aws" in j for j in jars)
    assert cmd[-4:] == [
        str(REPO_ROOT / "jobs" / "stream_scores.py"),
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        "--available-now",
    ]
    on_s3 = submit.command(
        load_config("cluster"),
        REPO_ROOT / "conf" / "cluster.yaml",
        "train",
        [],
        master="spark://h:7077",
        wheel=wheel,
        python=python,
    )
    assert "hadoop-aws" in on_s3[on_s3.index("--jars") + 1]
    assert on_s3[on_s3.index("--driver-java-options") + 1] == "-Xss16m"


def test_a_config_after_the_job_is_a_usage_error():
    with pytest.raises(UsageError, match="--config before the job"):
        submit.main(["train", "--config", "cluster"])


def test_maven_coordinates_go_to_packages_with_the_projects_ivy_settings(tmp_path):
    coords = ["io.delta:delta-spark_4.2_2.13:4.4.0"]
    cfg = load_config("local", environ={"CHURN__SPARK__PACKAGES": f"[{coords[0]}]"})
    cmd = submit.command(
        cfg,
        REPO_ROOT / "conf" / "local.yaml",
        "score_batch",
        [],
        master="spark://h:7077",
        wheel=tmp_path / "p.zip",
        python=tmp_path / "python",
    )
    assert cmd[cmd.index("--packages") + 1] == coords[0] and "--jars" not in cmd
    assert f"spark.jars.ivySettings={REPO_ROOT / 'jvm' / 'ivysettings.xml'}" in cmd
