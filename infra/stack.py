"""The embedded local stack: one Kafka broker in KRaft mode and an MLflow tracking server.

No Docker: the broker runs from the jars `make setup` fetched from Maven Central, MLflow
from the project's venv. Both listen on 127.0.0.1 only; their state, logs and pid files
live under ``local_stack.state_dir``. ``up`` waits on real readiness probes (a Kafka
metadata request, MLflow's ``/health``), is harmless when already up, and ``down`` stops
exactly the processes it started and the ones those started, even when a server was killed
and left its workers running.

    churn-stack up | down | status
    churn-stack kafka-topics --list         # Kafka's own CLI tools, from the fetched jars
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from infra import jars
from infra.cli import add_config_arguments, run
from infra.config import Config, load_config

KAFKA_DIR = Path(__file__).resolve().parents[1] / "jvm" / "kafka"
KAFKA_TOOLS = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
    "kafka-producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
}


@dataclass(frozen=True)
class Stack:
    """Paths and ports of one local stack, derived from the config."""

    state_dir: Path
    host: str
    kafka_port: int
    controller_port: int
    kafka_heap: str
    mlflow_port: int
    timeout_s: float
    jars_dir: Path

    @classmethod
    def from_config(cls, cfg: Config) -> Stack:
        s = cfg.local_stack
        return cls(
            state_dir=cfg.resolve(s.state_dir),
            host=s.host,
            kafka_port=s.kafka_port,
            controller_port=s.kafka_controller_port,
            kafka_heap=s.kafka_heap,
            mlflow_port=s.mlflow_port,
            timeout_s=s.start_timeout_s,
            jars_dir=cfg.resolve(cfg.spark.jars_dir),
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    def path(self, service: str, name: str) -> Path:
        return self.state_dir / service / name


# --- processes -------------------------------------------------------------------------


# Every process the stack starts, and every process those start, carries this variable with
# its service's state dir: `down` finds a server's workers even after the server itself was
# killed (decision 51).
_SERVICE_MARK = "CHURN_STACK_SERVICE"


def _pid_alive(pid: int) -> bool:
    """The process runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _mark(stack: Stack, service: str) -> str:
    return str(stack.state_dir / service)


def members(stack: Stack, service: str) -> list[psutil.Process]:
    """The live processes this stack started for ``service``, found by the mark in their
    environment: the one it spawned and whatever that one spawned, orphans included."""
    mark, found = _mark(stack, service), []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(_SERVICE_MARK) == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def running_pid(stack: Stack, service: str) -> int | None:
    """The pid of a service this stack started, or None (stale pid files are ignored)."""
    pidfile = stack.path(service, "pid")
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text().strip() or 0)
    # A recycled pid carries neither the service's mark nor the state dir in its command
    # line (what identified a service started before the mark existed).
    if pid and any(p.pid == pid for p in members(stack, service)):
        return pid
    try:
        if (
            pid
            and _pid_alive(pid)
            and str(stack.state_dir) in " ".join(psutil.Process(pid).cmdline())
        ):
            return pid
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _spawn(
    stack: Stack,
    service: str,
    cmd: list[str],
    log: Path,
    env: dict[str, str] | None = None,
) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # A new session: the service outlives this command and its terminal's Ctrl-C.
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**(os.environ if env is None else env), _SERVICE_MARK: _mark(stack, service)},
        )
    stack.path(service, "pid").write_text(str(proc.pid))
    return proc.pid


def _wait_ready(
    name: str, pid: int, probe: Callable[[], bool], log: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return
        if not _pid_alive(pid):
            tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else []
            raise RuntimeError(
                f"{name} exited during start-up; last lines of {log}:\n" + "\n".join(tail)
            )
        time.sleep(0.5)
    raise TimeoutError(f"{name} not ready after {timeout_s:.0f}s; see {log}")


def stop_service(stack: Stack, service: str, timeout_s: float = 30) -> list[int]:
    """Stop every process this stack started for one service, orphans of a killed server
    too: SIGTERM, then SIGKILL after ``timeout_s``. Returns their pids ([]: none ran)."""
    procs = members(stack, service)
    pid = running_pid(stack, service)
    if pid is not None and all(p.pid != pid for p in procs):
        procs += _process_group(pid)  # started before the mark existed: its group, as then
    alive = procs
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)
        _, alive = psutil.wait_procs(alive, timeout=wait)
        if not alive:
            break
    stack.path(service, "pid").unlink(missing_ok=True)
    return [p.pid for p in procs]


def _process_group(pgid: int) -> list[psutil.Process]:
    """The live processes of one process group (a service's session leader and its children)."""
    group = []
    for proc in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            if os.getpgid(proc.pid) == pgid:
                group.append(proc)
    return group


def _clear_orphans(stack: Stack, service: str) -> str:
    """Stop what a killed server of ``service`` left running, before starting a new one."""
    orphans = stop_service(stack, service)
    return f"stopped orphans of an earlier {service} (pids {orphans}); " if orphans else ""


# --- Kafka -----------------------------------------------------------------------------


def kafka_java(
    stack: Stack, main_class: str, args: list[str], *, log4j: str = "tools", heap: str = "256m"
) -> list[str]:
    """A java command line running one Kafka class from the fetched broker jars."""
    jars.classpath("kafka", stack.jars_dir)  # a clear error when `make setup` has not run
    return [
        "java",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={KAFKA_DIR / f'log4j2-{log4j}.properties'}",
        "-cp",
        str(stack.jars_dir / "kafka" / "*"),
        main_class,
        *args,
    ]


def _server_properties(stack: Stack) -> str:
    h, p, c = stack.host, stack.kafka_port, stack.controller_port
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{h}:{c}",
            f"listeners=PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            f"advertised.listeners=PLAINTEXT://{h}:{p}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={stack.path('kafka', 'data')}",
            "num.partitions=2",
            # One broker: every internal topic has a single replica.
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "",
        ]
    )


def kafka_ready(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """A real metadata round trip to the broker, not just an open port."""
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient(
            {"bootstrap.servers": bootstrap, "log_level": 0, "logger": _quiet_logger()}
        )
        admin.list_topics(timeout=timeout_s)
        return True
    except Exception:
        return False


def _quiet_logger():  # librdkafka logs connection refusals while the broker starts
    import logging

    logger = logging.getLogger("churn.stack.kafka-probe")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def start_kafka(stack: Stack) -> str:
    pid = running_pid(stack, "kafka")
    if pid is not None:
        return f"kafka already running (pid {pid})"
    cleared = _clear_orphans(stack, "kafka")
    if _port_open(stack.host, stack.kafka_port) or _port_open(stack.host, stack.controller_port):
        raise RuntimeError(
            f"port {stack.kafka_port} or {stack.controller_port} on {stack.host} is in "
            "use by a process this stack did not start; stop it or change "
            "local_stack.kafka_port / kafka_controller_port"
        )
    props = stack.path("kafka", "server.properties")
    props.parent.mkdir(parents=True, exist_ok=True)
    props.write_text(_server_properties(stack))
    if not stack.path("kafka", "data").joinpath("meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        subprocess.run(
            kafka_java(
                stack, "kafka.tools.StorageTool", ["format", "-t", cluster_id, "-c", str(props)]
            ),
            check=True,
            capture_output=True,
        )
    log = stack.path("kafka", "broker.log")
    cmd = kafka_java(stack, "kafka.Kafka", [str(props)], log4j="broker", heap=stack.kafka_heap)
    pid = _spawn(stack, "kafka", cmd, log)
    _wait_ready("kafka", pid, lambda: kafka_ready(stack.bootstrap), log, stack.timeout_s)
    return f"{cleared}kafka started (pid {pid})"


# --- MLflow ----------------------------------------------------------------------------


def mlflow_ready(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_mlflow(stack: Stack) -> str:
    pid = running_pid(stack, "mlflow")
    if pid is not None:
        return f"mlflow already running (pid {pid})"
    cleared = _clear_orphans(stack, "mlflow")
    if _port_open(stack.host, stack.mlflow_port):
        raise RuntimeError(
            f"port {stack.mlflow_port} on {stack.host} is in use by a process this "
            "stack did not start; stop it or change local_stack.mlflow_port"
        )
    d = stack.state_dir / "mlflow"
    (d / "artifacts").mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        stack.host,
        "--port",
        str(stack.mlflow_port),
        "--backend-store-uri",
        f"sqlite:///{d / 'mlflow.db'}",
        "--artifacts-destination",
        str(d / "artifacts"),
        "--workers",
        "1",
    ]
    log = d / "server.log"
    # The server's GenAI job runner starts ~8 worker processes this pipeline never uses.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    pid = _spawn(stack, "mlflow", cmd, log, env=env)
    _wait_ready("mlflow", pid, lambda: mlflow_ready(stack.mlflow_uri), log, stack.timeout_s)
    return f"{cleared}mlflow started (pid {pid})"


# --- commands --------------------------------------------------------------------------


def up(stack: Stack) -> None:
    for _name, start in (("kafka", start_kafka), ("mlflow", start_mlflow)):
        t0 = time.monotonic()
        print(f"{start(stack)} in {time.monotonic() - t0:.1f}s", flush=True)
    status(stack)


def down(stack: Stack) -> None:
    for service in ("mlflow", "kafka"):
        leader = running_pid(stack, service)
        stopped = stop_service(stack, service)
        if not stopped:
            print(f"{service}: was not running")
        elif leader is None:
            print(f"{service}: stopped what a killed {service} left running (pids {stopped})")
        else:
            print(f"{service}: stopped")


def status(stack: Stack) -> bool:
    """Print where each service listens and logs; True when both answer their probes."""
    rows = [
        ("kafka", stack.bootstrap, kafka_ready(stack.bootstrap), stack.path("kafka", "broker.log")),
        (
            "mlflow",
            stack.mlflow_uri,
            mlflow_ready(stack.mlflow_uri),
            stack.path("mlflow", "server.log"),
        ),
    ]
    hints = []
    for name, where, ok, log in rows:
        pid = running_pid(stack, name)
        orphans = [] if pid else [p.pid for p in members(stack, name)]
        if ok and pid:
            state = "up"
        elif orphans:
            state = "orphan"
            hints.append(f"{name}: the server was killed, {orphans} still run; `down` stops them")
        else:
            state = "answering, not started by this stack" if ok else "down"
        pids = ",".join(map(str, orphans)) or pid or "-"
        print(f"{name:7s} {state:6s} {where:24s} pid={pids}  log={log}")
    for hint in hints:
        print(hint)
    print(f"state   {stack.state_dir}")
    return all(ok for _, _, ok, _ in rows)


def run_kafka_tool(stack: Stack, tool: str, args: list[str]) -> int:
    if not any(a.startswith("--bootstrap-server") for a in args):
        args = ["--bootstrap-server", stack.bootstrap, *args]
    return subprocess.run(kafka_java(stack, KAFKA_TOOLS[tool], args)).returncode


def main(argv: list[str] | None = None) -> None:
    """``churn-stack``: a bad --config prints one line and exits 2 (infra.cli)."""
    run(_main, "churn-stack", argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="churn-stack",
        description="Start, stop and inspect the embedded local stack (Kafka KRaft broker + "
        "MLflow server on 127.0.0.1), and run Kafka's command-line tools against it.",
        epilog="Kafka tools take their usual options; --bootstrap-server defaults to the local "
        "broker, e.g. `churn-stack kafka-topics --list`.",
    )
    add_config_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start Kafka and MLflow and wait until both answer")
    sub.add_parser("down", help="stop the processes `up` started")
    sub.add_parser("status", help="show what answers, where it listens and logs; exit 1 if not up")
    for tool in KAFKA_TOOLS:
        sub.add_parser(tool, help=f"run Kafka's {tool} from the fetched jars", add_help=False)
    args, rest = parser.parse_known_args(argv)
    stack = Stack.from_config(load_config(args.config))
    if args.command in KAFKA_TOOLS:
        return run_kafka_tool(stack, args.command, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "up":
            up(stack)
        elif args.command == "down":
            down(stack)
        elif not status(stack):
            return 1
    except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
        raise SystemExit(f"churn-stack {args.command}: {exc}") from None
    return 0


if __name__ == "__main__":
    main()
