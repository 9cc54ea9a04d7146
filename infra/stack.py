"""The embedded local stack: Kafka in KRaft mode (one node, or a replicated cluster of
``local_stack.brokers``) and an MLflow tracking server; with conf/cluster.yaml also a
PostgreSQL server for MLflow (infra/stack_postgres.py) and an S3-compatible object store
(S3Proxy).

No Docker: the broker and the object store run from the jars `make setup` fetched from
Maven Central, MLflow from the project's venv, PostgreSQL from Debian's package. All listen
on 127.0.0.1 only; their state, logs and pid files live under ``local_stack.state_dir``.
``up`` waits on real readiness probes (a Kafka metadata request, MLflow's ``/health``, a
PostgreSQL login, the store's bucket listing), is harmless when already up, and ``down``
stops exactly the processes it started and the ones those started, even when a server was
killed and left its workers running.

    churn-stack up | down | status
    churn-stack kafka-topics --list         # Kafka's own CLI tools, from the fetched jars
    churn-stack provision-mlflow            # users and grants on a server it did not start
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
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
from typing import Any

import psutil

from infra import jars, stack_postgres
from infra.cli import Refused, add_config_arguments, run
from infra.config import Config, ConfigError, load_config
from infra.stack_security import (
    MLFLOW_GRANTS,
    Secured,
    ensure_tls,
    internal_admin_config,
    kafka_acls,
    kafka_security_properties,
    mlflow_server_env,
    private_file,
    provision_kafka,
    provision_mlflow,
)

KAFKA_DIR = Path(__file__).resolve().parents[1] / "jvm" / "kafka"
# Each tool's main class, and the option that takes its client settings' file.
KAFKA_TOOLS = {
    "kafka-topics": ("org.apache.kafka.tools.TopicCommand", "--command-config"),
    "kafka-console-consumer": (
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "--consumer.config",
    ),
    "kafka-console-producer": ("org.apache.kafka.tools.ConsoleProducer", "--producer.config"),
    "kafka-consumer-groups": (
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--command-config",
    ),
    "kafka-get-offsets": ("org.apache.kafka.tools.GetOffsetShell", "--command-config"),
    "kafka-consumer-perf-test": (
        "org.apache.kafka.tools.ConsumerPerformance",
        "--consumer.config",
    ),
    "kafka-producer-perf-test": ("org.apache.kafka.tools.ProducerPerformance", "--producer.config"),
}


@dataclass(frozen=True)
class KafkaNode:
    """One Kafka process: a broker and a KRaft controller; ``service`` names its state dir."""

    node_id: int
    service: str
    port: int
    controller_port: int
    internal_port: int
    """The inter-broker listener of a secured stack (unused otherwise)."""


@dataclass(frozen=True)
class Stack:
    """Paths and ports of one local stack, derived from the config."""

    state_dir: Path
    host: str
    brokers: int
    kafka_port: int
    controller_port: int
    internal_port: int
    kafka_heap: str
    mlflow_port: int
    timeout_s: float
    jars_dir: Path
    secured: Secured | None = None
    """Set when the stack runs secured (local_stack.secure, docs/security.md)."""
    mlflow_backend: str = "sqlite"
    postgres_port: int = 15432
    object_store: bool = False
    object_store_port: int = 19000
    bucket: str = "churn-lake"
    spark_master_port: int = 7077
    spark_master_webui_port: int = 8080
    spark_workers: int = 2
    spark_worker_cores: int = 1
    spark_worker_memory: str = "2g"

    @classmethod
    def from_config(cls, cfg: Config) -> Stack:
        s = cfg.local_stack
        return cls(
            state_dir=cfg.resolve(s.state_dir),
            host=s.host,
            brokers=s.brokers,
            kafka_port=s.kafka_port,
            controller_port=s.kafka_controller_port,
            internal_port=s.kafka_internal_port,
            kafka_heap=s.kafka_heap,
            mlflow_port=s.mlflow_port,
            timeout_s=s.start_timeout_s,
            jars_dir=cfg.resolve(cfg.spark.jars_dir),
            secured=Secured.from_config(cfg),
            mlflow_backend=s.mlflow_backend,
            postgres_port=s.postgres_port,
            object_store=s.object_store,
            object_store_port=s.object_store_port,
            bucket=s.object_store_bucket,
            spark_master_port=s.spark_master_port,
            spark_master_webui_port=s.spark_master_webui_port,
            spark_workers=s.spark_workers,
            spark_worker_cores=s.spark_worker_cores,
            spark_worker_memory=s.spark_worker_memory,
        )

    def kafka_nodes(self) -> list[KafkaNode]:
        """Node N (from 1) listens on kafka_port + N - 1; one broker's service is "kafka"."""
        return [
            KafkaNode(
                node_id=n,
                service="kafka" if self.brokers == 1 else f"kafka-{n}",
                port=self.kafka_port + n - 1,
                controller_port=self.controller_port + n - 1,
                internal_port=self.internal_port + n - 1,
            )
            for n in range(1, self.brokers + 1)
        ]

    @property
    def bootstrap(self) -> str:
        """Every broker's address: a client that starts while one is down finds the others."""
        return ",".join(f"{self.host}:{node.port}" for node in self.kafka_nodes())

    @property
    def internal_bootstrap(self) -> str:
        return ",".join(f"{self.host}:{node.internal_port}" for node in self.kafka_nodes())

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    def secrets(self) -> dict[str, str]:
        """A secured stack's credentials (secrets.env, made on first use)."""
        assert self.secured is not None
        return self.secured.secrets(self.state_dir)

    def kafka_client(self, role: str = "admin") -> dict[str, Any]:
        """librdkafka settings for ``role`` on the client listener(s): SCRAM over TLS in a
        secured stack, plaintext otherwise."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.secured is not None:
            creds, values = self.secured.kafka_users[role], self.secrets()
            conf |= {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": values[creds.username_env],
                "sasl.password": values[creds.password_env],
                "ssl.ca.location": str(ensure_tls(self.tls_dir).ca),
            }
        return conf

    def kafka_probe(self, node: KafkaNode) -> dict[str, Any]:
        """How readiness is probed on one node: its client listener, or, in a secured stack,
        its inter-broker listener as the admin (that answers before any SCRAM user exists)."""
        if self.secured is None:
            return {"bootstrap.servers": f"{self.host}:{node.port}"}
        admin, values = self.secured.kafka_users["admin"], self.secrets()
        return internal_admin_config(
            f"{self.host}:{node.internal_port}",
            ensure_tls(self.tls_dir),
            values[admin.username_env],
            values[admin.password_env],
        )

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def object_store_uri(self) -> str:
        return f"http://{self.host}:{self.object_store_port}"

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
    user: str | None = None,
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
            user=user,
        )
    stack.path(service, "pid").write_text(str(proc.pid))
    return proc.pid


def log_tail(log: Path, lines: int = 30) -> str:
    """The last lines of a service's log, for an error message."""
    tail = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
    return f"last lines of {log}:\n" + "\n".join(tail)


def _wait_ready(
    name: str, pid: int, probe: Callable[[], bool], log: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return
        if not _pid_alive(pid):
            raise RuntimeError(f"{name} exited during start-up; {log_tail(log)}")
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


def _claim(stack: Stack, service: str, *ports: tuple[int, str]) -> str:
    """Before starting ``service``, which does not run: stop what a killed server of it left
    running, and refuse a port (with the config key that sets it) that another process holds.
    Returns a note on the orphans stopped ("" when none)."""
    orphans = stop_service(stack, service)
    for port, key in ports:
        if _port_open(stack.host, port):
            raise RuntimeError(
                f"port {port} on {stack.host} is in use by a process this stack did not "
                f"start; stop it or change local_stack.{key}"
            )
    return f"stopped orphans of an earlier {service} (pids {orphans}); " if orphans else ""


def _mode(stack: Stack) -> str:
    return "secure" if stack.secured is not None else "plaintext"


def _mode_file(stack: Stack, service: str) -> Path:
    return stack.path(service, "mode")


def _same_mode(stack: Stack, service: str) -> None:
    """A running service was started for the same kind of stack, secured or not: clients of
    the other kind could not talk to it."""
    mode = _mode_file(stack, service)
    running = mode.read_text().strip() if mode.exists() else "plaintext"
    if running != _mode(stack):
        raise RuntimeError(
            f"{service} runs {running} (started with another config) and this config wants "
            f"it {_mode(stack)}: stop it first (`make down`)"
        )


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


def _server_properties(stack: Stack, node: KafkaNode) -> str:
    n = stack.brokers
    # Three copies of every partition (of internal topics too), and a write with acks=all
    # waits for two of them: one broker can die without losing an acknowledged record.
    replicas, min_isr = min(3, n), max(1, min(2, n - 1))
    voters = ",".join(f"{v.node_id}@{stack.host}:{v.controller_port}" for v in stack.kafka_nodes())
    h, p, c, i = stack.host, node.port, node.controller_port, node.internal_port
    if stack.secured is None:
        listeners = [
            f"listeners=PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            f"advertised.listeners=PLAINTEXT://{h}:{p}",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]
    else:  # no plaintext port at all (docs/security.md)
        admin, values = stack.secured.kafka_users["admin"], stack.secrets()
        listeners = [
            f"listeners=CLIENT://{h}:{p},BROKER://{h}:{i},CONTROLLER://{h}:{c}",
            f"advertised.listeners=CLIENT://{h}:{p},BROKER://{h}:{i}",
            "inter.broker.listener.name=BROKER",
            "listener.security.protocol.map=CLIENT:SASL_SSL,BROKER:SASL_SSL,CONTROLLER:SASL_SSL",
            *kafka_security_properties(
                ensure_tls(stack.tls_dir), values[admin.username_env], values[admin.password_env]
            ),
        ]
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            "controller.listener.names=CONTROLLER",
            *listeners,
            f"log.dirs={stack.path(node.service, 'data')}",
            "num.partitions=2",
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={min_isr}",
            f"offsets.topic.replication.factor={replicas}",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "",
        ]
    )


def kafka_ready(client: dict[str, Any], timeout_s: float = 2.0) -> bool:
    """A real metadata round trip to the broker (``client``: librdkafka settings), not just
    an open port."""
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({**client, "log_level": 0, "logger": _quiet_logger()})
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


def _cluster_id(stack: Stack) -> str:
    """The id a node's data was formatted with, shared by every node: an existing node's,
    or a new one for a new cluster."""
    for node in stack.kafka_nodes():
        meta = stack.path(node.service, "data") / "meta.properties"
        if meta.exists():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
    return new_cluster_id()


def new_cluster_id() -> str:
    """A random cluster id as Kafka's own Uuid.randomUuid makes one: URL-safe base64 of 16
    random bytes, never starting with '-', which the format tool would read as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _check_layout(stack: Stack) -> None:
    """Refuse to start next to the data of a cluster of another size: its topics, and the
    streaming jobs' checkpointed offsets into them, belong to that cluster."""
    wanted = {node.service for node in stack.kafka_nodes()}
    other = sorted(
        d.name
        for d in stack.state_dir.glob("kafka*")
        if d.name not in wanted and (d / "data" / "meta.properties").exists()
    )
    if other:
        raise RuntimeError(
            f"{stack.state_dir} holds the data of a Kafka cluster of another size "
            f"({', '.join(other)}), and local_stack.brokers is {stack.brokers}: go back to that "
            "size, or `make clean` (drops all local state: topics, tables, checkpoints, runs)"
        )


def start_kafka(stack: Stack) -> str:
    """Start every Kafka node that is not running (all of them, or one that died), then
    wait until each answers a metadata request."""
    _check_layout(stack)
    notes, started = [], []
    for node in stack.kafka_nodes():
        pid = running_pid(stack, node.service)
        if pid is not None:
            _same_mode(stack, node.service)
            notes.append(f"{node.service} already running (pid {pid})")
            continue
        cleared = _claim(
            stack,
            node.service,
            (node.port, "kafka_port"),
            (node.controller_port, "kafka_controller_port"),
            *([(node.internal_port, "kafka_internal_port")] if stack.secured else []),
        )
        props = stack.path(node.service, "server.properties")
        # A secured node's file holds the admin's password: its owner's eyes only.
        private_file(props, _server_properties(stack, node))
        _mode_file(stack, node.service).write_text(_mode(stack))
        if not stack.path(node.service, "data").joinpath("meta.properties").exists():
            fmt = subprocess.run(
                kafka_java(
                    stack,
                    "kafka.tools.StorageTool",
                    ["format", "-t", _cluster_id(stack), "-c", str(props)],
                ),
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                raise RuntimeError(
                    f"formatting {node.service}'s storage failed (exit {fmt.returncode}): "
                    f"{(fmt.stderr or fmt.stdout).strip()[-2000:]}"
                )
        log = stack.path(node.service, "broker.log")
        cmd = kafka_java(stack, "kafka.Kafka", [str(props)], log4j="broker", heap=stack.kafka_heap)
        # The authorizer's decisions (denials) go to their own file: the audit record.
        cmd.insert(1, f"-Dchurn.authorizer.log={stack.path(node.service, 'authorizer.log')}")
        # Every node starts before any is awaited: a node answers once a quorum of
        # controllers is up.
        started.append((node, _spawn(stack, node.service, cmd, log), log, cleared))
    for node, pid, log, cleared in started:
        probe = functools.partial(kafka_ready, stack.kafka_probe(node))
        _wait_ready(node.service, pid, probe, log, stack.timeout_s)
        notes.append(f"{cleared}{node.service} started (pid {pid})")
    if stack.secured is not None:
        notes.append(_provision_kafka(stack))
    return "; ".join(notes)


def _provision_kafka(stack: Stack) -> str:
    """A secured cluster's users, topics and ACLs (docs/security.md), then a login as the
    admin on the client listener: the SCRAM credentials work."""
    assert stack.secured is not None
    s, values = stack.secured, stack.secrets()
    admin = s.kafka_users["admin"]
    users = {role: values[creds.username_env] for role, creds in s.kafka_users.items()}
    changed = provision_kafka(
        internal_admin_config(
            stack.internal_bootstrap,
            ensure_tls(stack.tls_dir),
            values[admin.username_env],
            values[admin.password_env],
        ),
        {values[c.username_env]: values[c.password_env] for c in s.kafka_users.values()},
        kafka_acls(s.topics, users),
        s.topics,
        s.partitions,
    )
    deadline = time.monotonic() + stack.timeout_s
    while not kafka_ready(stack.kafka_client("admin")):
        if time.monotonic() > deadline:
            raise TimeoutError("the admin's SCRAM login on the client listener never worked")
    return "secured: " + ("; ".join(changed) or "users, topics and ACLs as they were")


def stop_kafka(stack: Stack) -> list[int]:
    """Stop every Kafka node (and any left from a cluster of another size)."""
    return [pid for service in kafka_services(stack) for pid in stop_service(stack, service)]


def kafka_services(stack: Stack) -> list[str]:
    """The configured nodes' service names, then any other node's with state on disk."""
    names = [node.service for node in stack.kafka_nodes()]
    found = sorted(d.name for d in stack.state_dir.glob("kafka*") if d.is_dir())
    return names + [name for name in found if name not in names]


# --- MLflow ----------------------------------------------------------------------------


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def mlflow_ready(uri: str) -> bool:
    return _answers_200(f"{uri}/health")


def start_mlflow(stack: Stack) -> str:
    pid = running_pid(stack, "mlflow")
    if pid is not None:
        _same_mode(stack, "mlflow")
        backend = stack.path("mlflow", "backend")
        running = backend.read_text().strip() if backend.exists() else "sqlite"
        if running != stack.mlflow_backend:
            raise RuntimeError(
                f"mlflow runs on {running} (started with another config) and this config "
                f"wants {stack.mlflow_backend} (local_stack.mlflow_backend): `make down` first"
            )
        return f"mlflow already running (pid {pid}){_provision_mlflow(stack)}"
    cleared = _claim(stack, "mlflow", (stack.mlflow_port, "mlflow_port"))
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
        "--artifacts-destination",
        f"s3://{stack.bucket}/mlflow" if stack.object_store else str(d / "artifacts"),
        "--workers",
        "1",
    ]
    log = d / "server.log"
    # The server's GenAI job runner starts ~8 worker processes this pipeline never uses.
    # The backend store's URI goes through the environment: PostgreSQL's holds a password.
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_BACKEND_STORE_URI": _backend_store_uri(stack),
    }
    if stack.object_store:
        # The local store takes no credentials (loopback only); boto3 wants some to sign.
        env |= {
            "MLFLOW_S3_ENDPOINT_URL": stack.object_store_uri,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    if stack.secured is not None:
        values = stack.secured.secrets(stack.state_dir)
        env |= mlflow_server_env(stack.state_dir, values, stack.secured.mlflow_users["admin"])
        cmd += ["--app-name", "basic-auth"]
    _mode_file(stack, "mlflow").write_text(_mode(stack))
    stack.path("mlflow", "backend").write_text(stack.mlflow_backend)
    pid = _spawn(stack, "mlflow", cmd, log, env=env)
    _wait_ready("mlflow", pid, lambda: mlflow_ready(stack.mlflow_uri), log, stack.timeout_s)
    return f"{cleared}mlflow started (pid {pid}){_provision_mlflow(stack)}"


def _backend_store_uri(stack: Stack) -> str:
    if stack.mlflow_backend == "postgresql":
        return stack_postgres.uri(stack.state_dir / "postgres", stack.host, stack.postgres_port)
    return f"sqlite:///{stack.state_dir / 'mlflow' / 'mlflow.db'}"


# --- the object store ------------------------------------------------------------------


def object_store_ready(uri: str) -> bool:
    """The store lists its buckets."""
    return _answers_200(f"{uri}/")


def start_object_store(stack: Stack) -> str:
    """S3Proxy over <state_dir>/s3proxy/data (jclouds' filesystem provider): an S3 API on
    127.0.0.1:object_store_port, no authentication, the bucket a directory under data/."""
    service = "s3proxy"
    d = stack.state_dir / service
    (d / "data" / stack.bucket).mkdir(parents=True, exist_ok=True)  # the bucket
    pid = running_pid(stack, service)
    if pid is not None:
        return f"s3proxy already running (pid {pid}), bucket {stack.bucket}"
    cleared = _claim(stack, service, (stack.object_store_port, "object_store_port"))
    (jar,) = jars.classpath("s3proxy", stack.jars_dir)
    props = d / "s3proxy.conf"
    props.write_text(
        f"s3proxy.endpoint={stack.object_store_uri}\n"
        "s3proxy.authorization=none\n"
        "jclouds.provider=filesystem\n"
        f"jclouds.filesystem.basedir={d / 'data'}\n"
    )
    log = d / "server.log"
    cmd = ["java", "-Xmx256m", "-jar", str(jar), "--properties", str(props)]
    pid = _spawn(stack, service, cmd, log)
    probe = functools.partial(object_store_ready, stack.object_store_uri)
    _wait_ready(service, pid, probe, log, stack.timeout_s)
    return (
        f"{cleared}s3proxy started (pid {pid}), bucket {stack.bucket} at {stack.object_store_uri}"
    )


# --- PostgreSQL ------------------------------------------------------------------------


def start_postgres(stack: Stack) -> str:
    """MLflow's backend store when local_stack.mlflow_backend is postgresql: the stack's own
    PostgreSQL cluster (infra/stack_postgres.py), started, answering, with MLflow's database."""
    service, d = stack_postgres.SERVICE, stack.state_dir / stack_postgres.SERVICE
    pid = running_pid(stack, service)
    if pid is not None:
        return f"postgres already running (pid {pid})"
    cleared = _claim(stack, service, (stack.postgres_port, "postgres_port"))
    pg = stack_postgres.ensure_installed()
    user = stack_postgres.run_as()
    d.mkdir(parents=True, exist_ok=True)
    stack_postgres.check_reachable(user, d)
    made = stack_postgres.init_cluster(pg, d)
    log = d / "server.log"
    log.touch()
    stack_postgres.chown_to(log, user)
    cmd = stack_postgres.server_command(pg, d, stack.host, stack.postgres_port)
    pid = _spawn(stack, service, cmd, log, user=user)
    probe = functools.partial(stack_postgres.ready, d, stack.host, stack.postgres_port)
    _wait_ready(service, pid, probe, log, stack.timeout_s)
    created = stack_postgres.ensure_database(d, stack.host, stack.postgres_port)
    what = "; ".join(
        x for x in ("new cluster" if made else "", "database mlflow made" if created else "") if x
    )
    return f"{cleared}postgres {pg.parent.name} started (pid {pid}){f' ({what})' if what else ''}"


def _provision_mlflow(stack: Stack) -> str:
    """A secured server's users, passwords (from secrets.env) and grants; what changed."""
    if stack.secured is None:
        return ""
    s = stack.secured
    changed = provision_mlflow(
        stack.mlflow_uri, stack.secrets(), s.mlflow_users, s.experiment, s.model_name
    )
    return f" with basic auth ({'; '.join(changed) or 'users and grants as they were'})"


def _provision_remote_mlflow(cfg: Config) -> int:
    users = {str(role): creds for role, creds in cfg.mlflow.credentials.items()}
    wanted = ("admin", *MLFLOW_GRANTS)
    missing = [role for role in wanted if role not in users]
    if missing:
        raise ConfigError(
            f"mlflow.credentials: no {', '.join(missing)}; provision-mlflow needs "
            f"{', '.join(wanted)} (conf/secure.yaml shows them)"
        )
    unset = sorted(
        env
        for creds in users.values()
        for env in (creds.username_env, creds.password_env)
        if not os.environ.get(env)
    )
    if unset:
        raise ConfigError(
            f"mlflow.credentials names environment variables that are not set: {', '.join(unset)}"
        )
    m = cfg.mlflow
    try:
        changed = provision_mlflow(m.tracking_uri, os.environ, users, m.experiment, m.model_name)
    except (RuntimeError, OSError) as exc:
        raise Refused(f"provision-mlflow on {m.tracking_uri}: {exc}") from None
    print(f"{m.tracking_uri}: {'; '.join(changed) or 'users and grants as they were'}")
    return 0


# --- commands --------------------------------------------------------------------------


def _services(stack: Stack) -> list[tuple[str, Callable[[Stack], str]]]:
    first = [("postgres", start_postgres)] if stack.mlflow_backend == "postgresql" else []
    first += [("s3proxy", start_object_store)] if stack.object_store else []
    return [("kafka", start_kafka), *first, ("mlflow", start_mlflow)]


def up(stack: Stack) -> None:
    for _name, start in _services(stack):
        t0 = time.monotonic()
        print(f"{start(stack)} in {time.monotonic() - t0:.1f}s", flush=True)
    status(stack)


def down(stack: Stack) -> None:
    from infra import stack_spark

    if (stack.state_dir / stack_spark.MASTER).is_dir():  # `make cluster-up`'s, when it ran
        stack_spark.cluster_down(stack)
    # MLflow before its database and store; each of those when it ran, whatever this config.
    postgres = stack.mlflow_backend == "postgresql" or (stack.state_dir / "postgres").is_dir()
    s3proxy = stack.object_store or (stack.state_dir / "s3proxy").is_dir()
    for service in (
        "mlflow",
        *kafka_services(stack),
        *(["s3proxy"] if s3proxy else []),
        *(["postgres"] if postgres else []),
    ):
        leader = running_pid(stack, service)
        stopped = []
        if service == "postgres" and leader is not None:
            # Fast shutdown (SIGINT to the server alone): a clean checkpoint, where SIGTERM
            # to every process of the service would leave crash recovery for the next start.
            server = members(stack, service)
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(leader).send_signal(signal.SIGINT)
            psutil.wait_procs(server, timeout=30)
            stopped = [p.pid for p in server]
        stopped += stop_service(stack, service)
        if not stopped:
            print(f"{service}: was not running")
        elif leader is None:
            print(f"{service}: stopped what a killed {service} left running (pids {stopped})")
        else:
            print(f"{service}: stopped")


def status(stack: Stack) -> bool:
    """Print where each service listens and logs; True when both answer their probes."""
    rows = [
        *(
            (
                node.service,
                f"{stack.host}:{node.port}",
                kafka_ready(stack.kafka_probe(node)),
                stack.path(node.service, "broker.log"),
            )
            for node in stack.kafka_nodes()
        ),
        *(
            [
                (
                    "postgres",
                    f"{stack.host}:{stack.postgres_port}",
                    _port_open(stack.host, stack.postgres_port),
                    stack.path("postgres", "server.log"),
                )
            ]
            if stack.mlflow_backend == "postgresql"
            else []
        ),
        *(
            [
                (
                    "s3proxy",
                    stack.object_store_uri,
                    object_store_ready(stack.object_store_uri),
                    stack.path("s3proxy", "server.log"),
                )
            ]
            if stack.object_store
            else []
        ),
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
        print(f"{name:8s} {state:6s} {where:24s} pid={pids}  log={log}")
    for hint in hints:
        print(hint)
    if stack.brokers > 1:
        print(f"clients kafka.bootstrap_servers={stack.bootstrap} (any one of them works)")
    print(f"state   {stack.state_dir}")
    return all(ok for _, _, ok, _ in rows)


def java_client_properties(stack: Stack, role: str = "admin") -> Path:
    """A secured stack's client settings for Kafka's Java tools, as ``role`` (SCRAM over TLS,
    the CA as a PEM truststore), in a file only its owner reads."""
    conf = stack.kafka_client(role)
    path = stack.path("kafka", f"{role}-client.properties")
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{conf["sasl.username"]}" password="{conf["sasl.password"]}";'
    )
    private_file(
        path,
        "\n".join(
            [
                "security.protocol=SASL_SSL",
                "sasl.mechanism=SCRAM-SHA-512",
                f"sasl.jaas.config={jaas}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={conf['ssl.ca.location']}",
                "",
            ]
        ),
    )
    return path


def run_kafka_tool(stack: Stack, tool: str, args: list[str]) -> int:
    """One of Kafka's tools against the stack; in a secured stack it connects as the admin
    (unless the arguments name a settings file of their own)."""
    main_class, config_option = KAFKA_TOOLS[tool]
    if not any(a.startswith("--bootstrap-server") for a in args):
        args = ["--bootstrap-server", stack.bootstrap, *args]
    if stack.secured is not None and not any(a.startswith(config_option) for a in args):
        args = [config_option, str(java_client_properties(stack)), *args]
    return subprocess.run(kafka_java(stack, main_class, args)).returncode


def main(argv: list[str] | None = None) -> None:
    """``churn-stack``: a bad --config prints one line and exits 2 (infra.cli)."""
    run(_main, "churn-stack", argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="churn-stack",
        description="Start, stop and inspect the embedded local stack on 127.0.0.1: Kafka in "
        "KRaft mode (local_stack.brokers nodes) and an MLflow server, plus a PostgreSQL server "
        "for MLflow (local_stack.mlflow_backend: postgresql) and an S3-compatible object store "
        "(local_stack.object_store) when the config asks (conf/cluster.yaml); and run Kafka's "
        "command-line tools against it.",
        epilog="Kafka tools take their usual options; --bootstrap-server defaults to the local "
        "broker, e.g. `churn-stack kafka-topics --list`.",
    )
    add_config_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up", help="start Kafka (every node not running) and MLflow; wait until all answer"
    )
    sub.add_parser("down", help="stop the processes `up` started")
    sub.add_parser("status", help="show what answers, where it listens and logs; exit 1 if not up")
    sub.add_parser(
        "cluster-up",
        help="start a Spark standalone master and local_stack.spark_workers workers on "
        "127.0.0.1 (pyspark's Spark), for `make submit`; wait until every worker registered",
    )
    sub.add_parser("cluster-down", help="stop the Spark standalone cluster `cluster-up` started")
    sub.add_parser("cluster-status", help="show the Spark cluster; exit 1 if a worker is missing")
    sub.add_parser(
        "provision-mlflow",
        help="as MLflow's admin, make the pipeline's users (passwords from the env vars "
        "mlflow.credentials names), experiment and model, and grant each user its permission, "
        "on mlflow.tracking_uri: for a server this stack did not start (docs/deploy.md)",
    )
    for tool in KAFKA_TOOLS:
        sub.add_parser(tool, help=f"run Kafka's {tool} from the fetched jars", add_help=False)
    args, rest = parser.parse_known_args(argv)
    cfg = load_config(args.config)
    if args.command == "provision-mlflow" and not rest:
        return _provision_remote_mlflow(cfg)
    stack = Stack.from_config(cfg)
    if args.command in KAFKA_TOOLS:
        return run_kafka_tool(stack, args.command, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command.startswith("cluster-"):
            from infra import stack_spark

            if args.command == "cluster-up":
                stack_spark.cluster_up(stack)
            elif args.command == "cluster-down":
                stack_spark.cluster_down(stack)
            elif not stack_spark.cluster_status(stack):
                return 1
        elif args.command == "up":
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
