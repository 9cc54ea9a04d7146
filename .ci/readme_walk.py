"""Run every command the README shows, exactly as written, in the order a newcomer would.

    python3 .ci/readme_walk.py            # from the repository root; CI runs it (.ci/run)
    python3 .ci/readme_walk.py --list     # the commands and how each is run, nothing started

The README's commands are the lines of its ```bash blocks and the first column of its
commands table. The walk knows how to run each one (PLAN below) and refuses to start when
the README shows a command the plan does not know, or the plan holds one the README no
longer shows: the README cannot promise what nobody ran.

Commands run in the repository root through bash. Most must exit 0. Commands that serve
until stopped (the README says "(Ctrl-C stops)", and `make notebook`) must still be
running after a while (or answer on their port), then get the signal a terminal would
send and must stop cleanly. `make test` itself is not repeated here: CI runs it next;
`make test-fast` only collects its tests, which that suite runs.

`make cluster-up` starts a Spark standalone cluster on 127.0.0.1 (the Spark that pyspark
ships); `make submit` sends a job to it, and `make cluster-down` stops it (or `make down`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


# --------------------------------------------------------------------------- the README


def _strip_comment(line: str) -> str:
    """Drop a trailing `# comment` (a # after whitespace, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_commands(text: str) -> list[str]:
    """Commands in ```bash blocks (continuations joined) and in the commands table."""
    out: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        out += [c for c in (_strip_comment(line) for line in joined.splitlines()) if c]
    out += re.findall(r"^\| `(make [a-z0-9-]+)` \|", text, flags=re.M)
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- the plan


@dataclass
class Step:
    command: str
    how: str = "run"  # run | serve (Ctrl-C after `serve_s`) | notebook | skip
    serve_s: float = 30.0  # alive this long (past JVM start and first batches), then Ctrl-C
    rc: int = 0  # the exit status the README says a "run" step ends with
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[], None] | None = None
    note: str = ""


def _demo_summary() -> None:
    s = json.loads((ROOT / ".local/demo/summary.json").read_text())
    assert s["events"]["produced"] > 0 and s["feature_rows"] > 0, s
    sc = s["scores"]
    assert 0 < sc["users_scored"] == sc["users_in_population"] <= s["users"], sc
    assert s["training"]["model"], s["training"]
    print(
        f"walk: summary: {s['events']['produced']:,} produced, {s['events']['quarantined']:,} "
        f"quarantined, {s['feature_rows']:,} feature rows, {s['scores']['users_scored']:,} "
        f"scored, model {s['training']['model']} promoted={s['training']['promoted']}"
    )


def _screenshots() -> None:
    shots = sorted((ROOT / ".local/screenshots").glob("*.png"))
    assert [p.name for p in shots] == [
        "mlflow-model.png",
        "mlflow-run.png",
        "mlflow-training-runs.png",
    ], shots
    assert all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 20_000 for p in shots)


def _table_written(path: str) -> Callable[[], None]:
    def check() -> None:
        assert any((ROOT / path / "_delta_log").glob("*.json")), f"no Delta table at {path}"

    return check


def _ports_closed(*ports: int) -> Callable[[], None]:
    def check() -> None:
        for port in ports:
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening"

    return check


SUBMIT = 'make submit JOB=score_batch ARGS="--output .local/warehouse/scores_on_cluster"'


PLAN: list[Step] = [
    Step("make demo", check=_demo_summary, note="on the fresh clone: venv, jars, stack, demo"),
    Step("make screenshots", check=_screenshots, note="installs chromium when missing"),
    Step("make test", how="skip", note="CI runs the whole suite right after this walk"),
    Step("make setup", note="a second time: nothing to download"),
    Step("make status"),
    Step(".venv/bin/churn-stack kafka-topics --list"),
    Step(
        ".venv/bin/churn-stack kafka-console-consumer --topic behaviour-events "
        "--from-beginning --max-messages 5"
    ),
    Step(".venv/bin/churn-stack --help"),
    Step("make notebook", how="notebook", env={"BROWSER": "true"}),
    Step('CHURN_TEST_STACK=running make test PYTEST_ARGS="tests/integration/test_smoke.py"'),
    Step(
        "make test-fast",
        env={"PYTEST_ADDOPTS": "--collect-only -q"},
        note="collected, not run: these tests run within the whole suite right after this walk",
    ),
    Step("make lint"),
    Step("make k8s"),
    Step("make clean", check=_ports_closed(9092, 5000), note="then the pipeline step by step"),
    Step("make up"),
    Step(
        ".venv/bin/python -m jobs.status",
        rc=1,
        note="no stream runs yet: both shown down, exit 1 (tests/integration/test_metrics.py "
        "reads it while they run)",
    ),
    Step(".venv/bin/python -m jobs.simulate --users 2000 --days 120"),
    Step(".venv/bin/python -m jobs.stream_features --available-now"),
    Step(".venv/bin/python -m jobs.backfill_features"),
    Step(".venv/bin/python -m jobs.train"),
    Step(".venv/bin/python -m jobs.stream_scores --available-now"),
    Step(".venv/bin/python -m jobs.score_batch"),
    Step(".venv/bin/python -m jobs.drift"),
    Step(".venv/bin/python -m jobs.realised"),
    Step(".venv/bin/python -m jobs.stream_features", how="serve"),
    Step(".venv/bin/python -m jobs.stream_scores", how="serve"),
    Step('.venv/bin/python -m jobs.schedule_train --cron "0 3 * * *"', how="serve", serve_s=20),
    Step(
        ".venv/bin/python -m jobs.replay --preset online-retail --topic retail-events "
        "../shared/data/online-retail"
    ),
    Step("make cluster-up"),
    Step(SUBMIT, check=_table_written(".local/warehouse/scores_on_cluster")),
    Step("make cluster-down", check=_ports_closed(7077, 8080)),
    Step("make bench", env={"STREAM_WINDOW_S": "30"}, note="a 30 s stream window in CI"),
    Step("make soak", env={"MINUTES": "1"}, note="one minute in CI: too short for a verdict"),
    Step("make down", check=_ports_closed(9092, 5000)),
]


# --------------------------------------------------------------------------- running


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(ready: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{what} did not come up within {timeout_s:.0f}s")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _sigint_as_in_a_terminal() -> None:
    """A walk started in the background (``cmd &`` in a script) inherits SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler: the README's Ctrl-C would not stop
    ``jobs.schedule_train``. Each command gets SIGINT as a terminal gives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_step(step: Step, env: dict[str, str]) -> str:
    """Run one command; return "" when it did what the README says, else the problem."""
    env = env | step.env
    proc = subprocess.Popen(
        ["bash", "-c", step.command],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    if step.how == "run":
        rc = proc.wait()
        return "" if rc == step.rc else f"exit {rc}" + (f", not {step.rc}" if step.rc else "")
    if step.how == "notebook":
        port = int(env.get("NOTEBOOK_PORT", "8888"))
        try:
            _wait_for(
                lambda: proc.poll() is None and _answers(f"http://127.0.0.1:{port}/api"),
                120,
                "Jupyter",
            )
        except TimeoutError as exc:
            os.killpg(proc.pid, signal.SIGTERM)
            return str(exc)
        print(f"walk: JupyterLab answers on http://127.0.0.1:{port}/api; stopping it", flush=True)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        return "" if not _listening(port) else f"port {port} still open after stop"
    # serve: still running after serve_s, then Ctrl-C (SIGINT to the process group)
    try:
        rc = proc.wait(step.serve_s)
        return f"exited with {rc} before being stopped"
    except subprocess.TimeoutExpired:
        pass
    print(f"walk: still serving after {step.serve_s:.0f}s; Ctrl-C", flush=True)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        rc = proc.wait(120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return "did not stop within 120s of Ctrl-C"
    return "" if rc == 0 else f"exit {rc} after Ctrl-C"


def _show_stack_logs(lines: int = 25) -> None:
    """After a failed step: the local stack's state and the tail of each service's log, so
    that a CI log says whether a broker or the tracking server had gone away, and why."""
    subprocess.run(["make", "status"], cwd=ROOT, check=False)
    for log in sorted((ROOT / ".local/stack").glob("*/*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"walk: --- last {len(tail)} lines of {log.relative_to(ROOT)}", flush=True)
        print("\n".join(tail), flush=True)


def check_plan(commands: list[str]) -> list[str]:
    planned = [s.command for s in PLAN]
    problems = [
        f"README shows a command the walk does not run: {c}" for c in commands if c not in planned
    ]
    problems += [
        f"the walk runs a command the README no longer shows: {c}"
        for c in planned
        if c not in commands
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--list", action="store_true", help="print the plan and exit")
    p.add_argument(
        "--steps",
        metavar="A-B",
        help="run only these steps (1-based, inclusive), e.g. 20-22; for debugging one part "
        "(it leaves the stack, and a Spark cluster its steps started, running)",
    )
    args = p.parse_args(argv)
    problems = check_plan(readme_commands(README.read_text(encoding="utf-8")))
    if problems:
        print("\n".join(f"walk: {x}" for x in problems), file=sys.stderr)
        return 2
    if args.list:
        for i, s in enumerate(PLAN, 1):
            print(f"{i:2d}. [{s.how}] {s.command}" + (f"  ({s.note})" if s.note else ""))
        return 0

    env = dict(os.environ)
    results: list[tuple[str, str, float]] = []
    try:
        first, _, last = (args.steps or f"1-{len(PLAN)}").partition("-")
        for i, step in enumerate(PLAN, 1):
            if not int(first) <= i <= int(last or first):
                continue
            print(f"\nwalk: [{i}/{len(PLAN)}] $ {step.command}", flush=True)
            if step.how == "skip":
                print(f"walk: not run here: {step.note}", flush=True)
                results.append((step.command, "skipped", 0.0))
                continue
            t0 = time.monotonic()
            problem = run_step(step, env)
            if not problem and step.check:
                try:
                    step.check()
                except AssertionError as exc:
                    problem = f"check failed: {exc}"
            took = time.monotonic() - t0
            results.append((step.command, problem or "ok", took))
            if problem:
                _show_stack_logs()
            print(
                f"walk: {'ok' if not problem else 'FAILED: ' + problem} ({took:.0f}s)", flush=True
            )
    finally:
        if not args.steps:  # a whole walk leaves nothing running; a partial one the stack
            subprocess.run(["make", "down"], cwd=ROOT, check=False, capture_output=True)

    print("\nwalk: summary")
    for command, status, took in results:
        print(f"  {status:8.8s} {took:6.0f}s  {command}")
    failed = [r for r in results if r[1] not in ("ok", "skipped")]
    print(f"walk: {len(results) - len(failed)}/{len(results)} commands as the README says")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
