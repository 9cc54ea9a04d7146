"""What the secured local stack is made of (`make up CONFIG=secure`, docs/security.md).

- **Credentials**: one generated password per Kafka principal and per MLflow user, written
  once into ``<state_dir>/secrets.env`` (mode 600) under the environment variables the config
  names; jobs read them from the environment, never from a file of their own.
- **TLS**: a CA and a broker certificate for 127.0.0.1/localhost, made once under
  ``<state_dir>/tls/`` (keys mode 600); clients trust ``tls/ca.pem``.

Both survive ``down``/``up`` (the broker's SCRAM credentials and MLflow's users are kept in
their data); ``make clean`` removes them with the rest of the stack's state.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.config import Config, EnvCredentials
from infra.mlflow_io import EXPERIMENT_KIND

# The principal each role connects as; docs/security.md lists their ACLs.
KAFKA_USERS = {
    "admin": "churn-admin",
    "producer": "churn-producer",
    "features": "churn-features",
    "scorer": "churn-scorer",
    "reader": "churn-reader",
}
MLFLOW_USERS = {"admin": "churn-admin", "trainer": "churn-trainer", "scorer": "churn-scorer"}
# The key the MLflow server signs its CSRF tokens with: the server's own secret, no user's.
FLASK_SECRET_ENV = "CHURN_MLFLOW_SERVER_SECRET_KEY"


@dataclass(frozen=True)
class Secured:
    """What a secured stack makes and provisions, from the config."""

    kafka_users: Mapping[str, EnvCredentials]
    mlflow_users: Mapping[str, EnvCredentials]
    topics: tuple[str, ...]
    """The pipeline's topics, which the administrator creates (the jobs' principals may not)."""
    partitions: int
    experiment: str
    model_name: str

    @classmethod
    def from_config(cls, cfg: Config) -> Secured | None:
        if not cfg.local_stack.secure:
            return None
        t = cfg.kafka.topics
        return cls(
            kafka_users={str(k): v for k, v in cfg.kafka.security.principals.items()},
            mlflow_users={str(k): v for k, v in cfg.mlflow.credentials.items()},
            topics=(t.events, t.dlq, t.scores),
            partitions=cfg.kafka.partitions,
            experiment=cfg.mlflow.experiment,
            model_name=cfg.mlflow.model_name,
        )

    def secrets(self, state_dir: Path) -> dict[str, str]:
        """secrets.env's values, made on first use."""
        return ensure_secrets(state_dir / "secrets.env", self.kafka_users, self.mlflow_users)


_SECRETS_HEADER = """\
# Credentials of the secured local stack, made by `churn-stack up` (conf/secure.yaml).
# Keep this file to yourself (mode 600). Load it into a shell with
#   set -a; . {path}; set +a
# `make` targets run with CONFIG=secure load it themselves.
"""


def private_file(path: Path, text: str | bytes) -> None:
    """Write ``path`` readable by its owner only, from its first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(text.encode() if isinstance(text, str) else text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name.strip()] = value.strip()
    return values


def ensure_secrets(
    path: Path,
    kafka: Mapping[str, EnvCredentials],
    mlflow: Mapping[str, EnvCredentials],
) -> dict[str, str]:
    """The stack's credentials by environment variable: those in ``path``, plus a new
    username and random password for every role that has none yet (the file is rewritten,
    mode 600, only then)."""
    values = read_env_file(path)
    wanted = [(creds, KAFKA_USERS[role]) for role, creds in kafka.items()] + [
        (creds, MLFLOW_USERS[role]) for role, creds in mlflow.items()
    ]
    added = False
    for creds, user in wanted:
        if creds.username_env not in values or creds.password_env not in values:
            values[creds.username_env] = user
            # URL-safe: no quote or backslash to escape in a JAAS line or an ini file.
            values[creds.password_env] = secrets.token_urlsafe(24)
            added = True
    if FLASK_SECRET_ENV not in values:
        values[FLASK_SECRET_ENV] = secrets.token_hex(32)
        added = True
    if added or not path.exists():
        body = "".join(f"{name}={value}\n" for name, value in values.items())
        private_file(path, _SECRETS_HEADER.format(path=path) + body)
    return values


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA's certificate (what clients trust), and the broker's private key
    followed by its certificate chain (what Kafka's PEM keystore reads)."""

    ca: Path
    broker_keystore: Path


def ensure_tls(tls_dir: Path, days: int = 825) -> TlsFiles:
    """A CA and a broker certificate for 127.0.0.1 / localhost, made once under ``tls_dir``."""
    files = TlsFiles(ca=tls_dir / "ca.pem", broker_keystore=tls_dir / "broker.pem")
    if files.ca.exists() and files.broker_keystore.exists():
        return files
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "churn-pipeline local stack"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("churn-pipeline local CA"))
        .issuer_name(name("churn-pipeline local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    private_file(
        tls_dir / "ca-key.pem",
        ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    private_file(
        files.broker_keystore,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(pem)
        + ca_cert.public_bytes(pem),
    )
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    return files


# --- MLflow ----------------------------------------------------------------------------

# Logins are checked against a slow password hash (~0.3 s a request on these machines): the
# server caches a good login for a minute. Grants are never cached.
MLFLOW_AUTH_INI = """\
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///{db}
admin_username = {admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
"""
# What each MLflow user may do with the experiment and the registered model: the smallest
# grants that let training log runs and register versions (EDIT), and the scorer resolve the
# alias and download the model (READ on both: the model's files sit under the experiment).
MLFLOW_GRANTS = {"trainer": "EDIT", "scorer": "READ"}


def mlflow_server_env(
    state_dir: Path, values: Mapping[str, str], admin: EnvCredentials
) -> dict[str, str]:
    """The basic-auth server's settings: its ini file (written here), the admin user's
    password for the first start, and the key its CSRF protection signs with."""
    ini = state_dir / "mlflow" / "basic_auth.ini"
    private_file(
        ini,
        MLFLOW_AUTH_INI.format(
            db=state_dir / "mlflow" / "basic_auth.db", admin=values[admin.username_env]
        ),
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": values[admin.password_env],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": values[FLASK_SECRET_ENV],
    }


def provision_mlflow(
    uri: str,
    values: Mapping[str, str],
    users: Mapping[str, EnvCredentials],
    experiment: str,
    model_name: str,
) -> list[str]:
    """As the admin: every user exists with its password from secrets.env, the experiment and
    the registered model exist, and each user holds its grant on both (MLFLOW_GRANTS).
    Idempotent; returns what it changed."""
    import requests

    admin = users["admin"]
    auth = (values[admin.username_env], values[admin.password_env])
    changed: list[str] = []

    def call(method: str, path: str, ok: tuple[int, ...] = (200,), **kw: object) -> Any:
        resp = requests.request(method, f"{uri}{path}", auth=auth, timeout=30, **kw)  # type: ignore[arg-type]
        if resp.status_code == 401:
            raise RuntimeError(
                f"MLflow refused its admin {auth[0]}: the password in secrets.env is not the "
                "one its user store holds (set at the store's first start); put that one "
                "back, or `make clean` to start the stack's state anew"
            )
        if resp.status_code not in ok:
            # Never the request: it may carry a password. The path and MLflow's answer only.
            raise RuntimeError(f"MLflow {method} {path}: {resp.status_code} {resp.text[:200]}")
        return resp

    for role in MLFLOW_GRANTS:
        creds = users[role]
        name, password = values[creds.username_env], values[creds.password_env]
        # users/get first: creating a user that exists answers with the password's hash.
        got = call("GET", "/api/2.0/mlflow/users/get", ok=(200, 404), params={"username": name})
        if got.status_code == 404:
            call(
                "POST",
                "/api/2.0/mlflow/users/create",
                json={"username": name, "password": password},
            )
            changed.append(f"user {name}")
        else:  # secrets.env is the truth: a password changed there is rotated here
            call(
                "PATCH",
                "/api/2.0/mlflow/users/update-password",
                json={"username": name, "password": password},
            )
    got = call(
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name",
        ok=(200, 404),
        params={"experiment_name": experiment},
    )
    if got.status_code == 200:
        experiment_id = got.json()["experiment"]["experiment_id"]
    else:
        tag = {"key": EXPERIMENT_KIND[0], "value": EXPERIMENT_KIND[1]}
        experiment_id = call(
            "POST", "/api/2.0/mlflow/experiments/create", json={"name": experiment, "tags": [tag]}
        ).json()["experiment_id"]
        changed.append(f"experiment {experiment}")
    if (
        call(
            "GET",
            "/api/2.0/mlflow/registered-models/get",
            ok=(200, 404),
            params={"name": model_name},
        ).status_code
        == 404
    ):
        call("POST", "/api/2.0/mlflow/registered-models/create", json={"name": model_name})
        changed.append(f"registered model {model_name}")
    for role, permission in MLFLOW_GRANTS.items():
        name = values[users[role].username_env]
        for kind, resource in (("experiment", experiment_id), ("registered_model", model_name)):
            key = {"username": name, "resource_type": kind, "resource_id": resource}
            grant = {**key, "permission": permission}
            path = "/api/3.0/mlflow/users/permissions/grant"
            answer = call("POST", path, ok=(200, 400), json=grant)
            if answer.status_code == 400:
                if answer.json().get("error_code") != "RESOURCE_ALREADY_EXISTS":
                    raise RuntimeError(f"MLflow POST {path}: 400 {answer.text[:200]}")
                # A grant exists (permissions/get answers the effective permission).
                have = call("GET", "/api/3.0/mlflow/users/permissions/get", params=key)
                if have.json().get("permission") == permission:
                    continue
                call("POST", "/api/3.0/mlflow/users/permissions/revoke", json=key)
                call("POST", path, json=grant)
            changed.append(f"{name} {permission} on {kind} {resource}")
    return changed


# --- Kafka -----------------------------------------------------------------------------

_PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
_SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
# Python consumers of churn-scores need a consumer group; the reader may use any under this.
READER_GROUP_PREFIX = "churn-reader"


def kafka_security_properties(tls: TlsFiles, admin_user: str, admin_password: str) -> list[str]:
    """server.properties lines of a secured node: every listener TLS; clients (CLIENT) log in
    with SCRAM-SHA-512, the nodes themselves (BROKER, CONTROLLER) with PLAIN as the admin, the
    only user those listeners know (SCRAM is not for a quorum of several controllers); the
    StandardAuthorizer denies what no ACL allows, and the admin is the super user."""
    plain = (
        f'{_PLAIN} required username="{admin_user}" password="{admin_password}" '
        f'user_{admin_user}="{admin_password}";'
    )
    return [
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={tls.broker_keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={tls.ca}",
        "ssl.client.auth=none",
        "sasl.mechanism.controller.protocol=PLAIN",
        "sasl.mechanism.inter.broker.protocol=PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        "listener.name.broker.sasl.enabled.mechanisms=PLAIN",
        "listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512",
        f"listener.name.controller.plain.sasl.jaas.config={plain}",
        f"listener.name.broker.plain.sasl.jaas.config={plain}",
        f"listener.name.client.scram-sha-512.sasl.jaas.config={_SCRAM} required;",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        f"super.users=User:{admin_user}",
    ]


def internal_admin_config(
    bootstrap: str, tls: TlsFiles, user: str, password: str
) -> dict[str, Any]:
    """librdkafka settings for the admin on the nodes' own (BROKER) listener, which answers
    before any SCRAM user exists."""
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(tls.ca),
    }


def kafka_acls(
    topics: tuple[str, ...], users: Mapping[str, str]
) -> list[tuple[str, str, str, str, str]]:
    """(principal, resource type, resource name, pattern, operation) the pipeline needs; every
    one an ALLOW. Spark's Kafka source assigns partitions and needs no group."""
    events, dlq, scores = topics
    return [
        (users["producer"], "TOPIC", events, "LITERAL", "WRITE"),
        (users["features"], "TOPIC", events, "LITERAL", "READ"),
        (users["features"], "TOPIC", dlq, "LITERAL", "WRITE"),
        (users["scorer"], "TOPIC", scores, "LITERAL", "WRITE"),
        (users["reader"], "TOPIC", scores, "LITERAL", "READ"),
        (users["reader"], "GROUP", READER_GROUP_PREFIX, "PREFIXED", "READ"),
    ]


def provision_kafka(
    admin_conf: Mapping[str, Any],
    passwords: Mapping[str, str],
    acls: list[tuple[str, str, str, str, str]],
    topics: tuple[str, ...],
    partitions: int,
    timeout_s: float = 60,
) -> list[str]:
    """As the admin: a SCRAM-SHA-512 credential per user (from secrets.env: a password changed
    there is rotated here), the pipeline's topics, and the ACLs; returns once the brokers
    apply all of them. Idempotent; returns what it created."""
    import time

    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        NewTopic,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(dict(admin_conf))
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    for future in admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(u, info, p.encode()) for u, p in passwords.items()]
    ).values():
        future.result()
    changed = []
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [t for t in topics if t not in existing]
    if missing:
        for future in admin.create_topics(
            [NewTopic(t, num_partitions=partitions) for t in missing]
        ).values():
            future.result()
        changed.append(f"topics {', '.join(missing)}")
    any_: Any = None  # a filter's "any name / principal / host" (typed as str)
    everything = AclBindingFilter(
        ResourceType.ANY,
        any_,
        ResourcePatternType.ANY,
        any_,
        any_,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )

    def held() -> set[tuple[str, str, str, str, str]]:
        return {
            (b.principal, b.restype.name, b.name, b.resource_pattern_type.name, b.operation.name)
            for b in admin.describe_acls(everything).result()
        }

    wanted = {(f"User:{p}", rt, name, pt, op) for p, rt, name, pt, op in acls}
    if new := wanted - held():
        for future in admin.create_acls(
            [
                AclBinding(
                    ResourceType[rt],
                    name,
                    ResourcePatternType[pt],
                    principal,
                    "*",
                    AclOperation[op],
                    AclPermissionType.ALLOW,
                )
                for principal, rt, name, pt, op in sorted(new)
            ]
        ).values():
            future.result()
        changed.append(f"{len(new)} ACLs")
    # Brokers apply topics and ACLs a moment after the controller accepts them.
    deadline = time.monotonic() + timeout_s
    while not (wanted <= held() and set(topics) <= set(admin.list_topics(timeout=10).topics)):
        if time.monotonic() > deadline:
            raise TimeoutError("the brokers did not apply the stack's topics and ACLs")
        time.sleep(0.1)
    return changed
