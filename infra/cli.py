"""What every command-line job shares: its --config and --debug options, and how it exits.

A configuration or usage error prints one line naming the job and what is wrong, and exits
with status 2, as argparse does for a bad option; a service that does not answer at start
(:class:`Unreachable`), or refuses the job's credentials or a permission (:class:`Refused`),
prints one line and exits with 1; ``--debug`` shows the traceback
instead (docs/decisions.md, decision 50). Every other failure keeps Python's traceback and
status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from infra.config import ConfigError

USAGE_ERROR = 2


class UsageError(Exception):
    """Arguments that contradict each other or name something that is not there."""


class Unreachable(Exception):
    """A service the job needs (the Kafka cluster, the tracking server) does not answer."""


class Refused(Exception):
    """A service refused the job: its credentials, or a permission its principal lacks."""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` (conf/<name>.yaml or a path) and ``--debug``."""
    parser.add_argument(
        "--config", default="local", help="conf/<name>.yaml or a YAML path (default: local)"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of a configuration or usage error instead of one line",
    )


def run(
    main: Callable[[list[str] | None], int | None],
    prog: str,
    argv: Sequence[str] | None = None,
) -> NoReturn:
    """Call ``main(argv)`` and exit with its status (None: 0); a :class:`ConfigError` or
    :class:`UsageError` becomes ``<prog>: <message>`` on stderr and status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        status = main(args)
    except (ConfigError, UsageError) as exc:
        if "--debug" in args:
            raise
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
        sys.exit(USAGE_ERROR)
    except (Unreachable, Refused) as exc:
        if "--debug" in args:
            raise
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    sys.exit(status or 0)
