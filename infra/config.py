"""One typed config: ``conf/<env>.yaml`` validated by pydantic, overridable by environment.

- Unknown keys are errors (``extra="forbid"``), so a typo never silently falls back to a default.
- ``CHURN__<SECTION>__<KEY>=value`` overrides any key (``__`` separates levels; values are
  parsed as YAML scalars, so ``CHURN__SPARK__SHUFFLE_PARTITIONS=8`` is an int).
- Secrets (SASL passwords) never live in the file: the file names the environment variable
  that holds them, and the value is a ``SecretStr`` that prints as ``**********``.
- A bad value fails at start-up with :class:`ConfigError`, which names every wrong key.
- ``extends: <name>`` layers a file on another (conf/secure.yaml on conf/local.yaml).
- Storage paths go through :meth:`Config.location`: a URI (s3a://, abfss://, hdfs://,
  file://) as given, a local path resolved against the repository.

Jobs load the config; the job-level modules they call (training's pipeline and tracking,
the stack) take the ``Config`` too; library code (features/, store/, scoring/) receives
plain values.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)


def _project_root() -> Path:
    """Where relative local paths and conf/ names resolve: the checkout this package sits in;
    installed from a wheel instead (shipped to a cluster with spark-submit --py-files, where
    ``__file__`` is inside the wheel), the working directory (docs/decisions.md 65)."""
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


REPO_ROOT = _project_root()
CONF_DIR = REPO_ROOT / "conf"
ENV_PREFIX = "CHURN__"


def is_uri(path: str | Path) -> bool:
    """``scheme://...``: storage Spark reaches through a Hadoop file system, not a local path."""
    return "://" in str(path)


class ConfigError(ValueError):
    """A config file or override is wrong; the message names each key and the problem."""


class _Model(BaseModel):
    # A string right below a field is its description (docs/configuration.md is built from them).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


KafkaRole = Literal["admin", "producer", "features", "scorer", "reader"]
"""Who a Kafka client acts for: each job connects as its own principal (docs/security.md)."""
MlflowRole = Literal["admin", "trainer", "scorer"]
"""Who an MLflow client acts for: training writes runs and models, the scorer reads them."""


class EnvCredentials(_Model):
    """A username and a password, each read from the environment variable named here."""

    username_env: str
    """Environment variable holding the username."""
    password_env: str
    """Environment variable holding the password (never the file, logs or MLflow)."""

    def read(self, what: str) -> tuple[str, SecretStr]:
        """(username, password) from the environment; ``what`` names the user in the error."""
        user, password = os.environ.get(self.username_env), os.environ.get(self.password_env)
        if not user or not password:
            raise ConfigError(
                f"{what} needs the environment variables {self.username_env} and "
                f"{self.password_env} (a secured local stack writes them to "
                ".local/stack/secrets.env: `set -a; . .local/stack/secrets.env; set +a`)"
            )
        return user, SecretStr(password)


class KafkaSecurity(_Model):
    """Client security. Credentials come from the environment variables named here."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Kafka security.protocol; SASL_SSL on most managed clusters."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """Required when the protocol is SASL_*."""
    sasl_username_env: str = "CHURN_KAFKA_SASL_USERNAME"
    """Environment variable holding the SASL username of a role not in `principals`."""
    sasl_password_env: str = "CHURN_KAFKA_SASL_PASSWORD"
    """Environment variable holding the SASL password of a role not in `principals`."""
    principals: dict[KafkaRole, EnvCredentials] = {}
    """Per-role credentials (admin, producer, features, scorer, reader), so that each job
    connects as a principal with only the ACLs it needs; a role not listed uses
    sasl_username_env / sasl_password_env."""
    ssl_ca_location: str | None = None
    """CA certificate file (PEM) for SSL, when the system's store does not hold it."""

    @model_validator(mode="after")
    def _sasl_needs_mechanism(self) -> KafkaSecurity:
        if self.protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"protocol {self.protocol} needs sasl_mechanism")
        return self

    def credentials(self, role: KafkaRole) -> tuple[str, SecretStr] | None:
        """``role``'s (username, password) from the environment, or None when SASL is off."""
        if not self.protocol.startswith("SASL"):
            return None
        source = self.principals.get(role) or EnvCredentials(
            username_env=self.sasl_username_env, password_env=self.sasl_password_env
        )
        return source.read(f"kafka.security: protocol {self.protocol} (as {role})")


class KafkaTopics(_Model):
    """Topic names."""

    events: str = "behaviour-events"
    """User behaviour events (the producers' and the feature stream's topic)."""
    dlq: str = "behaviour-events-dlq"
    """Rejected records, with their reason in headers (docs/events.md)."""
    scores: str = "churn-scores"
    """Churn scores emitted by the scorer."""


class KafkaProducerConfig(_Model):
    """Throughput defaults for the event producers (confluent-kafka / librdkafka names)."""

    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    """Producer compression."""
    linger_ms: int = Field(50, ge=0)
    """How long a producer waits to fill a batch."""
    batch_size: int = Field(65536, ge=1024)
    """Producer batch size in bytes."""
    max_in_flight: int = Field(5, ge=1, le=5)
    """Unacknowledged requests per connection (at most 5 keeps idempotence's ordering)."""
    enable_idempotence: bool = True
    """Retries never duplicate or reorder a record."""


class KafkaConfig(_Model):
    """The brokers, topics, topic layout, security and producer settings."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated host:port list."""
    topics: KafkaTopics = KafkaTopics()
    partitions: int = Field(2, ge=1)
    """Partitions of topics the jobs create (existing topics are left alone)."""
    replication_factor: int | None = Field(None, ge=1)
    """Replication of topics the jobs create (null: the cluster's default.replication.factor)."""
    min_insync_replicas: int | None = Field(None, ge=1)
    """min.insync.replicas of topics the jobs create (null: the cluster's default); with
    acks=all, a write succeeds once this many replicas have it."""
    security: KafkaSecurity = KafkaSecurity()
    producer: KafkaProducerConfig = KafkaProducerConfig()


class SparkConfig(_Model):
    """The SparkSession the jobs build (under spark-submit, its flags win)."""

    master: str | None = "local[2]"
    """null: leave the master to spark-submit --master (or Spark's default)."""
    shuffle_partitions: int = Field(4, ge=1)
    """spark.sql.shuffle.partitions; a few per core for small data."""
    driver_memory: str = "2g"
    """spark.driver.memory (ignored under spark-submit, which starts the driver)."""
    packages: list[str] | None = None
    """Maven coordinates to use instead of the jars `make setup` fetched."""
    jars_dir: Path = Path(".local/jars")
    """Where `make setup` put the Kafka connector and Delta jars."""
    ui_enabled: bool = False
    """Start the Spark UI (off locally: one less port)."""
    conf: dict[str, str] = {}
    """Any other Spark settings, passed through as given."""


class StorageConfig(_Model):
    """Where tables and checkpoints live: local dirs, s3a://, abfss:// or hdfs:// paths."""

    warehouse: str = ".local/warehouse"
    """Root of the Delta tables (feature store and churn_scores)."""
    checkpoints: str = ".local/checkpoints"
    """Root of the Structured Streaming checkpoints, one directory per query."""


class FeatureStreamConfig(_Model):
    """jobs/stream_features.py: validation limits, event-time rules, trigger and offsets."""

    max_value_bytes: int = Field(65536, ge=256)
    """Larger Kafka values are quarantined as oversized_value."""
    max_future_skew_s: int = Field(3600, ge=0)
    """An event more than this ahead of its Kafka record timestamp (the producer's clock) is
    rejected as future_event_time."""
    allowed_lateness_s: int = Field(3 * 86400, ge=0)
    """An event older than its partition's event-time clock minus this is quarantined as
    too_late."""
    earliest_event_time: AwareDatetime | None = datetime(2000, 1, 1, tzinfo=UTC)
    """Events before it are quarantined as before_earliest_event_time: a zero or epoch
    timestamp is a producer's bug, not an event (a replay of older logs lowers it; null: no
    bound). With a zone, e.g. 2000-01-01T00:00:00Z."""
    dq_stop_on: Literal["never", "warn", "error"] = "error"
    """Stop the stream, before a batch's features are written, on a violation of a data-
    quality expectation of this severity or above (features/expectations.py): error (only
    a bug or a corrupt state breaks those), warn (also what the data can break: volume,
    event types), never (count them only)."""
    trigger_s: float = Field(1, ge=0)
    """Seconds between micro-batches; 0 drains what is in the topic and stops (availableNow)."""
    max_offsets_per_trigger: int | None = Field(400_000, ge=1)
    """Records per micro-batch at most (null: all available); 400,000 keeps up with 50,000
    events/s on 2 cores, where 200,000 fell behind (docs/decisions.md, decision 45)."""
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    """Where a new checkpoint starts reading."""
    checkpoint_name: str = "stream_features"
    """The query's checkpoint directory under storage.checkpoints."""
    id_index_dir: Path | None = None
    """A local folder for the duplicate rule's index of event ids (RocksDB, decision 59).
    null: `event-ids/` inside the checkpoint, which must then be on local disk (a path or
    file://); a checkpoint on object storage needs a folder here (the index is rebuilt from
    the tables when missing)."""
    dlq_to_kafka: bool = True
    """Rejected records also go to kafka.topics.dlq (the quarantine table always)."""


class ScoringConfig(_Model):
    """jobs/stream_scores.py and jobs/score_batch.py."""

    model_alias: str = "champion"
    """The registry alias the scorer follows (hot swap when it moves)."""
    resolve_every_s: float = Field(0, ge=0)
    """Re-resolve the alias at most this often (0: at every micro-batch)."""
    band_medium: float = Field(0.3, gt=0, lt=1)
    """score >= this: medium risk."""
    band_high: float = Field(0.6, gt=0, lt=1)
    """score >= this: high risk (must be above band_medium)."""
    emit: Literal["every", "changed"] = "every"
    """every: emit every update; changed: only when the score moves by >= min_delta or the
    band changes (a user's first score is always emitted)."""
    min_delta: float = Field(0.05, ge=0, le=1)
    """The score move that counts as changed."""
    reasons_for_bands: list[Literal["low", "medium", "high"]] = ["medium", "high"]
    """Bands whose scores carry the top-3 reasons (exact TreeSHAP costs ~200x a prediction)."""
    trigger_s: float = Field(0.25, ge=0)
    """Seconds between micro-batches; 0 scores what is there and stops. A short trigger
    picks up a feature commit sooner: an idle trigger only lists the table's log
    (docs/decisions.md, decision 49)."""
    checkpoint_name: str = "stream_scores"
    """The query's checkpoint directory under storage.checkpoints."""
    wait_for_model_s: float = Field(10, gt=0)
    """While no model has the alias yet, check this often."""

    @model_validator(mode="after")
    def _bands_ordered(self) -> ScoringConfig:
        if not self.band_medium < self.band_high:
            raise ValueError(
                f"band_medium ({self.band_medium}) must be below band_high ({self.band_high})"
            )
        return self


class MetricsPorts(_Model):
    """The port each streaming job serves /metrics on; 0: no endpoint."""

    stream_features: int = Field(9108, ge=0, le=65535)
    stream_scores: int = Field(9109, ge=0, le=65535)


class MonitoringConfig(_Model):
    """The streaming jobs' Prometheus endpoints (infra/metrics.py, docs/operations.md), the
    drift check (jobs/drift.py) and realised performance (jobs/realised.py, docs/training.md)."""

    metrics_host: str = "127.0.0.1"
    """The address /metrics listens on (0.0.0.0 inside a container a scraper reaches)."""
    metrics_port: MetricsPorts = MetricsPorts()
    """stream_features 9108 and stream_scores 9109 by default; 0 turns one off."""
    drift_psi_threshold: float = Field(0.25, gt=0)
    """jobs.drift: a PSI above this, for a feature or the score, starts a training run
    (0.1-0.25 is read as a moderate shift, above 0.25 as one worth retraining for)."""
    drift_on_schedule: bool = True
    """jobs.schedule_train runs the drift check at each tick, before its new-data check."""
    realised_on_schedule: bool = True
    """jobs.schedule_train measures realised performance (jobs.realised) at each tick, first."""
    realised_min_users: int = Field(100, ge=1)
    """jobs.realised: a scoring day with fewer scored users is reported but cannot start a
    training run (its ROC-AUC is too noisy to judge the champion by)."""

    @model_validator(mode="after")
    def _distinct_ports(self) -> MonitoringConfig:
        p = self.metrics_port
        if p.stream_features and p.stream_features == p.stream_scores:
            raise ValueError(f"both streaming jobs would serve /metrics on {p.stream_features}")
        return self


class MlflowConfig(_Model):
    """Tracking server and registry (one URI serves both)."""

    tracking_uri: str = "http://127.0.0.1:5000"
    """MLflow tracking server; its registry holds the models."""
    experiment: str = "churn"
    """Experiment of the training runs (created on first use)."""
    model_name: str = "churn-lightgbm"
    """Registered model name."""
    credentials: dict[MlflowRole, EnvCredentials] = {}
    """Per-role users of a server with authentication (`mlflow server --app-name basic-auth`):
    a job sets MLFLOW_TRACKING_USERNAME / _PASSWORD from its role's variables (trainer: writes
    the experiment and the model; scorer: reads them). Empty: the environment's own."""


class TrainingLightGBM(_Model):
    """LightGBM hyperparameters (docs/training.md). Early stopping watches `metric` on the
    out-of-time validation cutoffs; `num_threads`, `seed` and deterministic=True make a run
    reproducible on the same machine."""

    num_boost_round: int = Field(400, ge=1)
    """Upper bound on trees; early stopping picks the count."""
    early_stopping_rounds: int = Field(40, ge=1)
    """Stop after this many rounds without improvement on validation."""
    metric: Literal["auc", "average_precision"] = "auc"
    """The validation metric early stopping watches."""
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(31, ge=2, le=4096)
    max_depth: int = Field(-1, ge=-1)
    """-1: no limit."""
    min_data_in_leaf: int = Field(40, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    lambda_l2: float = Field(1.0, ge=0)
    scale_pos_weight: float | None = Field(None, gt=0)
    """Weight of a churned row; null: n_not_churned / n_churned of the training rows. The
    booster's output is shifted back by log(weight), so its scores stay probabilities."""
    num_threads: int = Field(2, ge=1)
    seed: int = 42


GateMetric = Literal["roc_auc", "pr_auc", "precision_top_decile", "lift_top_decile"]


class TrainingGate(_Model):
    """Champion/challenger gate: both models are scored on the same out-of-time test rows."""

    metric: GateMetric = "roc_auc"
    """The metric the challenger must match or beat."""
    min_improvement: float = Field(0.0, ge=0)
    """Promote when challenger >= champion + this (0: a fresher model that is as good as the
    champion replaces it)."""
    floors: dict[GateMetric, float] = {"roc_auc": 0.6, "lift_top_decile": 1.5}
    """Absolute minimums on the challenger's test metrics, whether or not a champion exists."""


class TrainingConfig(_Model):
    """jobs/train.py and jobs/schedule_train.py: spine, labels, split, model, gate, schedule.

    Day-granular: a cutoff C is a date; features use days < C, the label the days in
    [C, C + horizon_days); C is labelled only when C + horizon_days <= last day + 1.
    """

    table: Literal["user_activity_daily"] = "user_activity_daily"
    """The silver table under storage.warehouse that training reads."""
    horizon_days: int = Field(28, ge=1, le=1095)
    """churned = no active day in [cutoff, cutoff + horizon_days)."""
    lookback_days: int = Field(28, ge=1, le=1095)
    """Eligible at a cutoff = active in [cutoff - lookback_days, cutoff)."""
    step_days: int = Field(7, ge=1, le=366)
    """Cutoffs every step_days back from the latest labelled one."""
    min_history_days: int = Field(28, ge=0)
    """The first cutoff is at least this many days after the table's first day."""
    max_cutoffs: int | None = Field(None, ge=3)
    """Keep only the latest N scheduled cutoffs (null: all)."""
    cutoffs: list[date] | None = None
    """Explicit cutoffs instead of the schedule, e.g. [2011-08-01, 2011-09-01]."""
    valid_cutoffs: int = Field(1, ge=1)
    """The latest cutoffs are test, the valid_cutoffs before them validation, the rest train."""
    test_cutoffs: int = Field(1, ge=1)
    """How many of the latest cutoffs are test."""
    purge_overlap: bool = False
    """Drop cutoffs whose label window reaches the next split's first cutoff (an embargo)."""
    lightgbm: TrainingLightGBM = TrainingLightGBM()
    gate: TrainingGate = TrainingGate()
    shap_rows: int = Field(1000, ge=10)
    """Test rows explained (pred_contrib) for the SHAP plot."""
    state_dir: Path = Path(".local/training")
    """The scheduler's lock file and last successful run's table version."""
    schedule_cron: str = "0 3 * * *"
    """When jobs.schedule_train trains (cron, UTC); it skips when the table has not changed."""

    @model_validator(mode="after")
    def _valid_cron(self) -> TrainingConfig:
        from croniter import croniter

        if not croniter.is_valid(self.schedule_cron):
            raise ValueError(f"schedule_cron {self.schedule_cron!r} is not a cron expression")
        return self


class LocalStackConfig(_Model):
    """The embedded stack that `make up` starts on loopback."""

    state_dir: Path = Path(".local/stack")
    """Broker data, MLflow database and artifacts, logs, pid files."""
    host: Literal["127.0.0.1"] = "127.0.0.1"
    """Loopback only."""
    brokers: int = Field(1, ge=1, le=5)
    """Kafka nodes (each broker and KRaft controller); 3 gives topics 3 replicas and
    min.insync.replicas 2 (`make up BROKERS=3`)."""
    kafka_port: int = Field(9092, ge=1024, le=65535)
    """The first broker's listener; broker N listens on kafka_port + N - 1."""
    kafka_controller_port: int = Field(19092, ge=1024, le=65535)
    """The first KRaft controller listener; node N's is kafka_controller_port + N - 1."""
    kafka_internal_port: int = Field(29092, ge=1024, le=65535)
    """A secured stack's first inter-broker listener (the nodes and the admin only); node N's
    is kafka_internal_port + N - 1. Unused when the stack is not secured."""
    kafka_heap: str = "768m"
    """The broker JVM's -Xmx."""
    mlflow_port: int = Field(5000, ge=1024, le=65535)
    mlflow_backend: Literal["sqlite", "postgresql"] = "sqlite"
    """MLflow's backend store: a SQLite file in the state dir, or a PostgreSQL server the
    stack starts (Debian's package, installed when missing and root; its own data directory
    under the state dir, on 127.0.0.1:postgres_port; infra/stack_postgres.py)."""
    postgres_port: int = Field(15432, ge=1024, le=65535)
    """The PostgreSQL server's port when mlflow_backend is postgresql."""
    object_store: bool = False
    """Also start an S3-compatible object store (S3Proxy over <state_dir>/s3proxy/data, on
    127.0.0.1:object_store_port, no authentication: loopback only) with the bucket
    object_store_bucket; MLflow's artifacts then go to s3://<bucket>/mlflow. The jobs reach
    it through spark.conf's fs.s3a settings (conf/cluster.yaml)."""
    object_store_port: int = Field(19000, ge=1024, le=65535)
    object_store_bucket: str = Field("churn-lake", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    spark_master_port: int = Field(7077, ge=1024, le=65535)
    """The Spark standalone master `make cluster-up` starts (spark://127.0.0.1:<port>, from
    the Spark that pyspark ships; infra/stack_spark.py), for jobs `make submit` sends."""
    spark_master_webui_port: int = Field(8080, ge=1024, le=65535)
    """The master's web UI (applications, workers, executors' logs)."""
    spark_workers: int = Field(2, ge=1, le=8)
    """Workers `make cluster-up` starts beside the master (`WORKERS=N` overrides)."""
    spark_worker_cores: int = Field(1, ge=1)
    """Cores each worker offers to executors."""
    spark_worker_memory: str = Field("2g", pattern=r"^[0-9]+[mg]$")
    """Memory each worker offers to executors (an executor takes 1g by default)."""
    secure: bool = False
    """Start the stack secured (conf/secure.yaml, docs/security.md): Kafka's listeners SASL_SSL
    (SCRAM-SHA-512) with a CA and certificate made on first start, ACLs per principal, and
    MLflow with basic authentication; credentials made on first start into
    <state_dir>/secrets.env."""
    start_timeout_s: float = Field(90, gt=0)
    """How long `make up` waits for each service to answer."""

    @model_validator(mode="after")
    def _distinct_ports(self) -> LocalStackConfig:
        n = self.brokers
        ports = [
            *range(self.kafka_port, self.kafka_port + n),
            *range(self.kafka_controller_port, self.kafka_controller_port + n),
            *(range(self.kafka_internal_port, self.kafka_internal_port + n) if self.secure else ()),
            self.mlflow_port,
            *((self.postgres_port,) if self.mlflow_backend == "postgresql" else ()),
            *((self.object_store_port,) if self.object_store else ()),
            self.spark_master_port,
            self.spark_master_webui_port,
        ]
        if len(set(ports)) != len(ports) or max(ports) > 65535:
            raise ValueError(
                f"ports must differ: with {n} broker(s), kafka_port {self.kafka_port}.."
                f"{self.kafka_port + n - 1}, kafka_controller_port {self.kafka_controller_port}.."
                f"{self.kafka_controller_port + n - 1}"
                + (
                    f", kafka_internal_port {self.kafka_internal_port}.."
                    f"{self.kafka_internal_port + n - 1}"
                    if self.secure
                    else ""
                )
                + f", mlflow_port {self.mlflow_port}"
                + (
                    f", postgres_port {self.postgres_port}"
                    if self.mlflow_backend == "postgresql"
                    else ""
                )
                + (f", object_store_port {self.object_store_port}" if self.object_store else "")
                + f", spark_master_port {self.spark_master_port}, spark_master_webui_port "
                f"{self.spark_master_webui_port} overlap"
            )
        return self


class Config(_Model):
    """conf/<env>.yaml."""

    env: str = "local"
    """A name for the environment (recorded with each training run)."""
    kafka: KafkaConfig = KafkaConfig()
    spark: SparkConfig = SparkConfig()
    storage: StorageConfig = StorageConfig()
    stream_features: FeatureStreamConfig = FeatureStreamConfig()
    scoring: ScoringConfig = ScoringConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    mlflow: MlflowConfig = MlflowConfig()
    training: TrainingConfig = TrainingConfig()
    local_stack: LocalStackConfig = LocalStackConfig()

    @model_validator(mode="after")
    def _secure_stack_needs_secure_clients(self) -> Config:
        sec = self.kafka.security
        if self.local_stack.secure and (sec.protocol, sec.sasl_mechanism) != (
            "SASL_SSL",
            "SCRAM-SHA-512",
        ):
            raise ValueError(
                "local_stack.secure starts Kafka with SASL_SSL and SCRAM-SHA-512 only: set "
                "kafka.security.protocol and sasl_mechanism to match (conf/secure.yaml does)"
            )
        if self.local_stack.secure:
            for key, listed, roles in (
                ("kafka.security.principals", sec.principals, get_args(KafkaRole)),
                ("mlflow.credentials", self.mlflow.credentials, get_args(MlflowRole)),
            ):
                if missing := [r for r in roles if r not in listed]:
                    raise ValueError(
                        f"local_stack.secure makes a user per role: {key} must name the "
                        f"variables of {', '.join(missing)} (conf/secure.yaml does)"
                    )
        return self

    @model_validator(mode="after")
    def _remote_checkpoints_need_a_local_id_index(self) -> Config:
        remote = self.local_dir(self.storage.checkpoints) is None
        if remote and self.stream_features.id_index_dir is None:
            raise ValueError(
                f"storage.checkpoints is {self.storage.checkpoints}: the feature stream's id "
                "index (RocksDB) needs local disk, so set stream_features.id_index_dir"
            )
        return self

    def resolve(self, path: str | Path) -> Path:
        """A relative local path is relative to the repository root, whatever the cwd. For
        local files only (state dirs, jars): storage goes through ``location``."""
        p = Path(path)
        return p if p.is_absolute() else REPO_ROOT / p

    def location(self, path: str, *parts: str) -> str:
        """A storage location: a URI (``s3a://``, ``abfss://``, ``hdfs://``, ``file://``) as
        given, a local path resolved like ``resolve``; ``parts`` joined with ``/``. (A
        ``Path`` would fold ``s3a://bucket`` into ``s3a:/bucket``.)"""
        base = path.rstrip("/") if is_uri(path) else str(self.resolve(path))
        return "/".join([base, *parts])

    def local_dir(self, path: str) -> Path | None:
        """The local folder behind a storage path (a ``file://`` URI's too); None for a
        remote one."""
        if path.startswith("file://"):
            return Path(path.removeprefix("file://"))
        return None if is_uri(path) else self.resolve(path)

    def warehouse_location(self) -> str:
        """storage.warehouse, ready for Spark and Delta."""
        return self.location(self.storage.warehouse)

    def checkpoint_location(self, name: str) -> str:
        """One query's checkpoint under storage.checkpoints."""
        return self.location(self.storage.checkpoints, name)

    def redacted(self) -> dict[str, Any]:
        """The config as plain data, safe to log or record as MLflow params (no secrets)."""
        return self.model_dump(mode="json")


def _set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys)}: cannot override inside non-mapping {key!r}")
        node = child
    node[keys[-1]] = value


def env_overrides(environ: dict[str, str] | os._Environ[str] | None = None) -> dict[str, Any]:
    """``CHURN__A__B=v`` -> ``{"a": {"b": v}}``, values parsed as YAML scalars."""
    environ = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
            _set_path(tree, keys, yaml.safe_load(raw) if raw != "" else None)
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        msg = msg.removeprefix("Value error, ")
        # A rule across keys (a model's validator) gets the whole section as its input:
        # its message names the keys, and the section would bury it.
        whole = isinstance(e.get("input"), dict)
        shown = "" if e["type"] == "extra_forbidden" or whole else f" (got {e.get('input')!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def config_path(env_or_path: str | Path) -> Path:
    path = Path(env_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        path = CONF_DIR / f"{env_or_path}.yaml"
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    return path


def _read_file(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One config file's mapping, on top of the file its ``extends:`` names (a conf/ name or
    a path relative to the file), recursively."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: names one config (got {base!r})")
    base_path = config_path(path.parent / base if base.endswith((".yaml", ".yml")) else base)
    seen = (*seen, path.resolve())
    if base_path.resolve() in seen:
        raise ConfigError(f"{path}: extends: {base} goes round in a circle")
    return _merge(_read_file(base_path, seen), data)


def load_config(env_or_path: str | Path = "local", environ: dict[str, str] | None = None) -> Config:
    """Load ``conf/<env>.yaml`` (or a path to a YAML file; ``extends:`` layers it on another)
    plus ``CHURN__`` overrides."""
    path = config_path(env_or_path)
    data = _merge(_read_file(path), env_overrides(environ))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, f"{path} + {ENV_PREFIX}* environment")) from None
