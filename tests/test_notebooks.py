"""The notebooks as committed: no outputs, the project's kernel, and their config from
CHURN_CONFIG. (tests/integration/test_demo.py executes them against the demo.)"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_the_three_notebooks_are_there():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean_and_reads_its_config_from_the_environment(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert 'load_config(os.environ.get("CHURN_CONFIG", "local"))' in code[0].source
    # Logic lives in the packages: a cell calls functions, it does not define them.
    assert not [c.source for c in code if "def " in c.source or "class " in c.source]
