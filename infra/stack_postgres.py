"""PostgreSQL for the local stack's MLflow server (local_stack.mlflow_backend: postgresql).

The server is Debian's `postgresql` package (or any PostgreSQL whose `pg_ctl` is on the
PATH; `PG_BIN` names another bin directory). When it is missing and this process is root
on a Debian machine, it is installed with apt-get, once. The cluster is the stack's own:
its data directory under <state_dir>/postgres, listening on 127.0.0.1:postgres_port only
(its socket in that directory, not /var/run), with one role that logs in by password
(scram-sha-256). The password is made on first start into <state_dir>/postgres/password
(mode 600) and reaches MLflow through its environment, never a command line.

PostgreSQL refuses to run as root: as root, the server runs as the package's `postgres`
user, which then owns the data directory.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

ROLE = "churn"
DATABASE = "mlflow"
SERVICE = "postgres"


def bin_dir() -> Path | None:
    """Where pg_ctl, initdb and postgres are: PG_BIN, else Debian's newest version, else
    the PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


def ensure_installed() -> Path:
    """The bin directory, installing Debian's package first when it is missing and we may."""
    found = bin_dir()
    if found is not None and (found / "postgres").exists():
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("postgres: installing Debian's postgresql package (apt-get, once)...", flush=True)
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
        ):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-1500:]}")
        found = bin_dir()
        if found is not None and (found / "postgres").exists():
            return found
    raise RuntimeError(
        "local_stack.mlflow_backend is postgresql and no PostgreSQL server is installed: "
        "`apt-get install postgresql` (Debian), `brew install postgresql` (macOS), or set "
        "PG_BIN to the directory holding pg_ctl, initdb and postgres"
    )


def run_as() -> str | None:
    """The user the server runs as: `postgres` when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root, PostgreSQL needs a non-root user to run as; the `postgres` "
            "user Debian's package makes is missing"
        ) from None
    return "postgres"


def reachable_by(user: str, path: Path) -> bool:
    """``user`` can walk down to ``path`` (each ancestor searchable by it)."""
    entry = pwd.getpwnam(user)
    groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    for parent in [*reversed(path.parents), path]:
        st = parent.stat()
        if st.st_uid == entry.pw_uid:
            bit = 0o100
        elif st.st_gid in groups:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return False
    return True


def check_reachable(user: str | None, service_dir: Path) -> None:
    """The server's user (None: this one) can reach its data directory, or a clear error."""
    if user is not None and not reachable_by(user, service_dir):
        raise RuntimeError(
            f"PostgreSQL runs as {user} (it refuses root) and {user} cannot reach "
            f"{service_dir}: give local_stack.state_dir a place every user can traverse "
            "(chmod o+x its parents)"
        )


def password(service_dir: Path) -> str:
    """The role's password, made on first use (mode 600)."""
    path = service_dir / "password"
    if not path.exists():
        service_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def chown_to(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def init_cluster(pg: Path, service_dir: Path) -> bool:
    """initdb the stack's data directory when it has none; True when it did."""
    data = service_dir / "data"
    if (data / "PG_VERSION").exists():
        return False
    user = run_as()
    secret = password(service_dir)
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    pwfile = service_dir / "initdb.pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    for path in (service_dir, data, pwfile):
        chown_to(path, user)
    try:
        done = subprocess.run(
            [
                str(pg / "initdb"),
                "-D",
                str(data),
                "-U",
                ROLE,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
            ],
            user=user,
            capture_output=True,
            text=True,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"initdb {data} failed: {(done.stderr or done.stdout).strip()[-1500:]}")
    return True


def server_command(pg: Path, service_dir: Path, host: str, port: int) -> list[str]:
    return [
        str(pg / "postgres"),
        "-D",
        str(service_dir / "data"),
        "-h",
        host,
        "-p",
        str(port),
        "-k",
        str(service_dir),  # the unix socket: the stack's directory, not /var/run
    ]


def uri(service_dir: Path, host: str, port: int, database: str = DATABASE) -> str:
    return f"postgresql://{ROLE}:{password(service_dir)}@{host}:{port}/{database}"


def ready(service_dir: Path, host: str, port: int) -> bool:
    """The server accepts the role's login."""
    import psycopg

    try:
        psycopg.connect(uri(service_dir, host, port, "postgres"), connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


def ensure_database(service_dir: Path, host: str, port: int) -> bool:
    """MLflow's database exists; True when it was made now."""
    import psycopg

    dsn = uri(service_dir, host, port, "postgres")
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            return False
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
        return True
