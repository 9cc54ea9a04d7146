"""Run a notebook top to bottom in a real Jupyter kernel against a config's stack, as
`make notebook` would (CHURN_CONFIG points it there)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from infra.config import REPO_ROOT, Config

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


def execute(notebook: Path, cfg: Config, config_path: Path, out: Path) -> nbformat.NotebookNode:
    """Execute ``notebook`` with CHURN_CONFIG=``config_path``; its executed copy goes to
    ``out`` (for a failure's reader, or a search of its outputs). Every cell must run, every
    figure render, and the set-up cell name ``cfg``'s warehouse (not conf/local.yaml's)."""
    out.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(out)}}
    )
    before = os.environ.get("CHURN_CONFIG")
    os.environ["CHURN_CONFIG"] = str(config_path)  # the kernel inherits it
    try:
        client.execute()
    finally:
        if before is None:
            os.environ.pop("CHURN_CONFIG", None)
        else:
            os.environ["CHURN_CONFIG"] = before
        nbformat.write(nb, out / notebook.name)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors, errors[0].get("evalue")
    setup_output = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert f"warehouse {cfg.storage.warehouse}," in setup_output
    figures = [c for c in nb.cells if c.cell_type == "code" and "_figure(" in c.source]
    rendered = [c for c in figures if any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert figures and len(rendered) == len(figures)
    return nb
