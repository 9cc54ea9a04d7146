"""A Spark standalone cluster on 127.0.0.1 (`make cluster-up`, `make cluster-down`): a master
and ``local_stack.spark_workers`` workers, from the Spark distribution pyspark ships, for
jobs that `make submit` sends with spark-submit (infra/submit.py, docs/deploy.md).

Each process is a service of the local stack (state, log and pid under
``<state_dir>/spark-master`` and ``spark-worker-N``), started, found and stopped like
Kafka's nodes. A worker offers ``spark_worker_cores`` cores and ``spark_worker_memory``;
its executors' logs go under its ``work/`` folder, their shuffle files under ``scratch/``.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from infra import jars
from infra import stack as st

MASTER = "spark-master"


def spark_home() -> Path:
    """pyspark's own Spark distribution: bin/spark-class, bin/spark-submit and the jars."""
    return jars.pyspark_dir()


def master_url(stack: st.Stack) -> str:
    return f"spark://{stack.host}:{stack.spark_master_port}"


def webui_url(stack: st.Stack) -> str:
    return f"http://{stack.host}:{stack.spark_master_webui_port}"


def workers(stack: st.Stack) -> list[str]:
    return [f"spark-worker-{n}" for n in range(1, stack.spark_workers + 1)]


def alive_workers(stack: st.Stack) -> int | None:
    """How many workers the master counts alive (its web UI's JSON); None: no answer."""
    try:
        with urllib.request.urlopen(f"{webui_url(stack)}/json/", timeout=5) as resp:
            return int(json.load(resp)["aliveworkers"])
    except (OSError, ValueError, KeyError):
        return None


def _spawn_spark(stack: st.Stack, service: str, main_class: str, args: list[str]) -> int:
    home = spark_home()
    d = stack.state_dir / service
    d.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": stack.host,
        # Executors' shuffle and block files, under the service's folder (not /tmp).
        "SPARK_LOCAL_DIRS": str(d / "scratch"),
        # The daemons' own heap (Spark's default is 1g): they only keep the books.
        "SPARK_DAEMON_MEMORY": "512m",
    }
    cmd = [str(home / "bin" / "spark-class"), main_class, *args]
    return st._spawn(stack, service, cmd, d / "server.log", env=env)


def cluster_up(stack: st.Stack) -> None:
    """Start the master and every worker that is not running; wait until the master counts
    them all alive."""
    pid = st.running_pid(stack, MASTER)
    if pid is None:
        cleared = st._claim(
            stack,
            MASTER,
            (stack.spark_master_port, "spark_master_port"),
            (stack.spark_master_webui_port, "spark_master_webui_port"),
        )
        pid = _spawn_spark(
            stack,
            MASTER,
            "org.apache.spark.deploy.master.Master",
            [
                *("--host", stack.host, "--port", str(stack.spark_master_port)),
                *("--webui-port", str(stack.spark_master_webui_port)),
            ],
        )
        st._wait_ready(
            MASTER,
            pid,
            lambda: alive_workers(stack) is not None,
            stack.path(MASTER, "server.log"),
            stack.timeout_s,
        )
        print(f"{cleared}spark-master started (pid {pid}) at {master_url(stack)}", flush=True)
    else:
        print(f"spark-master already running (pid {pid})", flush=True)
    for service in workers(stack):
        if (running := st.running_pid(stack, service)) is not None:
            print(f"{service} already running (pid {running})", flush=True)
            continue
        cleared = st._claim(stack, service)
        d = stack.state_dir / service
        wpid = _spawn_spark(
            stack,
            service,
            "org.apache.spark.deploy.worker.Worker",
            [
                master_url(stack),
                *("--host", stack.host, "--webui-port", "0"),
                *("--cores", str(stack.spark_worker_cores)),
                *("--memory", stack.spark_worker_memory),
                *("--work-dir", str(d / "work")),
            ],
        )
        print(f"{cleared}{service} started (pid {wpid})", flush=True)
    want = len(workers(stack))

    def registered() -> bool:
        for service in workers(stack):  # a worker that died at start: its own log says why
            if st.running_pid(stack, service) is None:
                raise RuntimeError(
                    f"{service} exited; {st.log_tail(stack.path(service, 'server.log'))}"
                )
        return (alive_workers(stack) or 0) >= want

    st._wait_ready(
        "the Spark workers", pid, registered, stack.path(MASTER, "server.log"), stack.timeout_s
    )
    cluster_status(stack)


def cluster_services(stack: st.Stack) -> list[str]:
    """The master and every worker this stack's state dir holds (more than the config's
    count when a bigger cluster ran before)."""
    found = {p.name for p in stack.state_dir.glob("spark-worker-*") if p.is_dir()}
    return [MASTER, *sorted(found | set(workers(stack)))]


def cluster_down(stack: st.Stack) -> None:
    """Stop the workers (and their executors), then the master."""
    for service in reversed(cluster_services(stack)):
        stopped = st.stop_service(stack, service)
        print(f"{service}: {'stopped' if stopped else 'was not running'}", flush=True)


def cluster_status(stack: st.Stack) -> bool:
    """Print the master, its workers and where they log; True when all workers are alive."""
    alive = alive_workers(stack)
    for service in [MASTER, *workers(stack)]:
        pid = st.running_pid(stack, service)
        where = master_url(stack) if service == MASTER else f"{stack.spark_worker_cores} core(s)"
        state = "up" if pid else "down"
        log = stack.path(service, "server.log")
        print(f"{service:14s} {state:4s} {where:26s} pid={pid or '-'}  log={log}")
    print(f"web UI  {webui_url(stack)} ({alive if alive is not None else 'no'} worker(s) alive)")
    return alive is not None and alive >= len(workers(stack))
