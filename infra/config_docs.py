"""Render docs/configuration.md from the config model, so the reference cannot drift from it.

Every key's type, limits, default and description come from ``infra.config`` (a field's
description is the string right below it). Run ``python -m infra.config_docs`` to rewrite
the file; a test fails when it is stale.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from infra.config import ENV_PREFIX, REPO_ROOT, Config

DOCS_PATH = REPO_ROOT / "docs" / "configuration.md"

_HEADER = f"""# Configuration reference

Generated from `infra/config.py` by `python -m infra.config_docs`; do not edit by hand.

A config is `conf/<name>.yaml` (every job takes `--config <name or path>`; the Makefile
passes `CONFIG`, default `local`). Keys not listed here are errors, and a value outside its
limits fails at start-up naming the key (one message, exit status 2; `--debug` shows the
traceback). Any key can be overridden from the environment:
`{ENV_PREFIX}` + the key's path in upper case with `__` between levels, the value parsed as
YAML, e.g. `{ENV_PREFIX}KAFKA__BOOTSTRAP_SERVERS=broker-1:9092` or
`{ENV_PREFIX}TRAINING__LIGHTGBM__NUM_LEAVES=63`. Relative local paths are relative to the
repository root. conf/local.yaml, the embedded local default, sets every key.
"""

_LIMITS = ((at.Ge, "≥"), (at.Gt, ">"), (at.Le, "≤"), (at.Lt, "<"))


def _type(annotation: Any) -> str:
    """A reader's name for a field type: `int`, `one of a, b`, `list of date`, `... or null`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        name = " or ".join(_type(a) for a in inner)
        return f"{name} or null" if len(inner) < len(args) else name
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"map {_type(args[0])} → {_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "{" + ", ".join(f"`{name}`" for name in annotation.model_fields) + "}"
    return getattr(annotation, "__name__", str(annotation))


def _limits(field: FieldInfo) -> str:
    found = [
        f"{sign} {getattr(m, kind.__name__.lower())}"
        for m in field.metadata
        for kind, sign in _LIMITS
        if isinstance(m, kind)
    ]
    return f" ({', '.join(found)})" if found else ""


def _default(field: FieldInfo) -> str:
    value = field.default
    if isinstance(value, Path):
        value = str(value)
    return "`" + json.dumps(value, default=str, ensure_ascii=False) + "`"


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _sections(model: type[BaseModel], path: str) -> Iterator[tuple[str, type[BaseModel]]]:
    yield path, model
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            assert isinstance(field.annotation, type)
            yield from _sections(field.annotation, f"{path}.{name}" if path else name)


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def render_config_docs() -> str:
    """Markdown for docs/configuration.md: one table per section, one row per key."""
    out = [_HEADER]
    for path, model in _sections(Config, ""):
        leaves = {n: f for n, f in model.model_fields.items() if not _is_section(f.annotation)}
        if not leaves:
            continue
        out.append(f"\n## `{path or '(top level)'}`\n")
        out.append(_cell(model.__doc__ if model is not Config else "The top level.") + "\n")
        out.append("| key | type | default | description |")
        out.append("|-----|------|---------|-------------|")
        for name, field in leaves.items():
            key = f"{path}.{name}" if path else name
            out.append(
                f"| `{key}` | {_type(field.annotation)}{_limits(field)} | {_default(field)} "
                f"| {_cell(field.description)} |"
            )
    return "\n".join(out) + "\n"


def main() -> None:
    DOCS_PATH.write_text(render_config_docs(), encoding="utf-8")
    print(f"wrote {DOCS_PATH}")


if __name__ == "__main__":
    main()
