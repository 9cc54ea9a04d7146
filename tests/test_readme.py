"""The README's commands and the CI walk that runs them (.ci/readme_walk.py) agree."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _walk():
    spec = importlib.util.spec_from_file_location("readme_walk", ROOT / ".ci" / "readme_walk.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_every_readme_command_is_in_the_walk_and_nothing_else():
    walk = _walk()
    commands = walk.readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(commands) > 20
    assert walk.check_plan(commands) == []


def test_commands_are_read_from_bash_blocks_and_the_table():
    walk = _walk()
    text = "\n".join(
        [
            "```bash",
            'make up   # start "it" # twice',
            "spark-submit --a \\",
            "  --b 'x # not a comment'",
            "```",
            "```",
            "not a command",
            "```",
            "| `make test` | runs |",
        ]
    )
    assert walk.readme_commands(text) == [
        "make up",
        "spark-submit --a --b 'x # not a comment'",
        "make test",
    ]
    assert walk.check_plan(["make up"])  # the plan holds far more than this README shows
