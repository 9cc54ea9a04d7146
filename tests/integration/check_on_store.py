"""Run ``assert_nothing_lost_or_doubled`` in a process of its own, with a Spark session for
a config on object storage (s3a://): the test process's own session was built for local
paths, and a JVM's classpath and S3 settings are fixed when it starts.

    python -m tests.integration.check_on_store <config.yaml> <produced.json> <scratch dir>

Prints the summary line and exits 0, or fails with the assertion's traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from infra.config import load_config
from infra.spark import build_spark
from tests.integration.streaming import assert_nothing_lost_or_doubled


def main(argv: list[str]) -> None:
    config, produced, scratch = argv
    cfg = load_config(config, environ={})
    spark = build_spark(cfg, app_name="check-on-store")
    try:
        ids = set(json.loads(Path(produced).read_text()))
        print(assert_nothing_lost_or_doubled(spark, cfg, ids, Path(scratch)), flush=True)
    finally:
        spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
