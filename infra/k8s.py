"""Render deploy/k8s with kustomize and validate every resource, offline.

    python -m infra.k8s                    # every overlay (and the base); exit 1 on a problem
    python -m infra.k8s deploy/k8s/overlays/production

Kubernetes' own kinds are checked against its OpenAPI schemas for ``K8S_VERSION``
(kubernetes-validate, strict: an unknown field is an error, as ``kubectl apply`` with
server-side field validation makes it). The operators' kinds (Strimzi's Kafka, KafkaNodePool,
KafkaTopic, KafkaUser; the Spark operator's SparkApplication) are checked against their
CRDs' schemas, vendored under deploy/k8s/schemas (its README says from where), with the
same strictness. The CRDs' CEL rules (x-kubernetes-validations) are not evaluated.

Secrets are references: a manifest that carries a Secret's data, or an environment variable
whose name says password, secret, token or key with a literal value, is a problem too.

kustomize is built once with the Go toolchain into .local/tools (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
SCHEMAS = K8S_DIR / "schemas"
TOOLS = REPO_ROOT / ".local" / "tools"
KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_VERSION = "v5.8.2"
# The oldest Kubernetes the manifests promise to fit (CronJob timeZone is GA since 1.27).
K8S_VERSION = "1.32"
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)KEY($|_)", re.IGNORECASE)


def kustomize() -> Path:
    """The kustomize binary, built with `go install` the first time (about a minute)."""
    binary = TOOLS / "bin" / "kustomize"
    stamp = TOOLS / "bin" / "kustomize.version"
    if binary.exists() and stamp.exists() and stamp.read_text().strip() == KUSTOMIZE_VERSION:
        return binary
    # The Go toolchain's default install puts `go` in /usr/local/go/bin, which a
    # non-login shell's PATH may lack.
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        raise RuntimeError(
            "building kustomize needs the Go toolchain (`go` on PATH); or put a kustomize "
            f"{KUSTOMIZE_VERSION} binary at {binary} and {KUSTOMIZE_VERSION} in {stamp}"
        )
    print(f"k8s: building kustomize {KUSTOMIZE_VERSION} with {go} (once, about a minute)...")
    env = os.environ | {
        "GOBIN": str(TOOLS / "bin"),
        "GOPATH": str(TOOLS / "go"),
        "GOCACHE": str(TOOLS / "go-cache"),
        "GOFLAGS": "-modcacherw",  # a module cache that rm -rf can remove
    }
    done = subprocess.run(
        [go, "install", f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"go install {KUSTOMIZE_MODULE} failed: {done.stderr.strip()[-2000:]}")
    stamp.write_text(KUSTOMIZE_VERSION + "\n")
    return binary


def render(directory: Path) -> list[dict[str, Any]]:
    """`kustomize build <directory>`: its resources."""
    done = subprocess.run(
        [str(kustomize()), "build", str(directory)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"kustomize build {directory}: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def overlays() -> list[Path]:
    return [K8S_DIR / "base", *sorted((K8S_DIR / "overlays").iterdir())]


def _strict(schema: Any) -> Any:
    """A CRD schema in which an object with declared properties takes no others, unless it
    says so (additionalProperties, x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: ({p: _strict(s) for p, s in v.items()} if k == "properties" else _strict(v))
        for k, v in schema.items()
    }
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _crd_validator(group: str, version: str, kind: str) -> Any:
    import jsonschema

    path = SCHEMAS / group / f"{kind.lower()}_{version}.json"
    if not path.exists():
        return None
    schema = _strict(json.loads(path.read_text()))
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: the API server's
    return jsonschema.Draft202012Validator(schema)


def problems(doc: dict[str, Any]) -> tuple[str, list[str]]:
    """(what it was checked against, its problems) for one resource."""
    import kubernetes_validate

    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    group, _, version = api_version.rpartition("/")
    found: list[str] = list(_inline_secrets(doc))
    if group and ((SCHEMAS / group).is_dir() or not group.endswith(".k8s.io")) and "." in group:
        validator = _crd_validator(group, version, kind)
        if validator is None:
            return "no schema", [*found, f"no CRD schema for {api_version} {kind} in {SCHEMAS}"]
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in error.absolute_path) or "(top)"
            found.append(f"{where}: {error.message[:300]}")
        return f"CRD schema {group}/{version}", found
    try:
        kubernetes_validate.validate(copy.deepcopy(doc), K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(top)"
        found.append(f"{where}: {exc.message[:300]}")
    except kubernetes_validate.SchemaNotFoundError:
        found.append(f"Kubernetes {K8S_VERSION} has no {api_version} {kind}")
    return f"Kubernetes {K8S_VERSION}", found


def _inline_secrets(doc: dict[str, Any]) -> Iterator[str]:
    if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
        yield "a Secret with its data inline: make it outside the manifests (docs/deploy.md)"

    def walk(node: Any, where: str) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("name"), str) and "value" in node and "valueFrom" not in node:
                name, value = node["name"], str(node["value"])
                if _SECRET_NAME.search(name) and "$(" not in value:
                    yield f"{where}: env {name} has a literal value; use valueFrom.secretKeyRef"
            for k, v in node.items():
                yield from walk(v, f"{where}.{k}" if where else k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{where}[{i}]")

    yield from walk(doc, "")


def validate(directory: Path) -> tuple[list[dict[str, Any]], int]:
    """Render and check one kustomization, printing a line a resource; the problem count."""
    docs = render(directory)
    bad = 0
    for doc in docs:
        against, found = problems(doc)
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        print(f"  {'ok  ' if not found else 'FAIL'} {name:48s} {against}")
        for problem in found:
            print(f"       {problem}")
        bad += len(found)
    return docs, bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.k8s",
        description="Render deploy/k8s's kustomizations with kustomize and validate every "
        f"resource: Kubernetes {K8S_VERSION}'s schemas for its kinds, the vendored CRD schemas "
        "(deploy/k8s/schemas) for the operators' kinds, and no secret inline.",
    )
    parser.add_argument(
        "dirs", nargs="*", type=Path, help="kustomizations (default: base and every overlay)"
    )
    args = parser.parse_args(argv)
    total = 0
    try:
        for directory in args.dirs or overlays():
            print(f"k8s: {os.path.relpath(directory.resolve(), Path.cwd())}")
            docs, bad = validate(directory)
            print(f"k8s: {len(docs)} resources, {bad} problem(s)")
            total += bad
    except RuntimeError as exc:
        print(f"k8s: {exc}", file=sys.stderr)
        return 2
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
