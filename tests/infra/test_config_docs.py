"""docs/configuration.md is generated from the config model and is current; conf/local.yaml
sets every key the reference lists."""

from __future__ import annotations

import re

import yaml

from infra.config import CONF_DIR
from infra.config_docs import DOCS_PATH, render_config_docs


def test_configuration_reference_is_current():
    assert DOCS_PATH.read_text(encoding="utf-8") == render_config_docs(), (
        "docs/configuration.md is stale: run `.venv/bin/python -m infra.config_docs`"
    )


def test_local_yaml_sets_every_documented_key():
    keys = re.findall(r"^\| `([a-z_.]+)` \|", render_config_docs(), flags=re.M)
    assert len(keys) > 60
    local = yaml.safe_load((CONF_DIR / "local.yaml").read_text())
    missing = []
    for key in keys:
        node = local
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(key)
                break
            node = node[part]
    assert not missing, f"conf/local.yaml does not set: {missing}"
