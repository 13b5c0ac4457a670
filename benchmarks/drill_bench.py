"""`make bench`: how fast the drill is against labsim, in one run, as a small table.

* bring-up: the whole drill on a fresh lab at time scale 0.005 (modelled durations: the box 5 min,
  boot 1 min, PE primary install 20 min, GitLab 15, replica 8, agent 3). Its `ensure-box` and
  `vm-up` steps give the bring-up wall time, compared with the critical path
  box + max(primary, gitlab) + max(replica, agents): the box is fetched once, before VMs start in
  parallel (parallel first runs race on its import).
* time outside the lab's work per task: the same drill's wall time minus the time during which
  labsim was modelling an operation (the union of its modelled waits, from labsim's
  `sleeps.jsonl`), over the number of steps (one Prefect task each). The drill runs in a child
  process so that its peak memory (ru_maxrss) is its own.
* fan-out: the failover/failback agent check (`wait_for_server`: poll agent runs until each is
  compiled by the wanted server) on labs with 1, 10 and 100 agents, one agent run modelled at
  `AGENT_RUN_MODEL` seconds: cold (no SSH connection open yet) and warm (connections open, as a
  drill's later steps find them); with the default bound on parallel agents, the old bound of
  16, and 100 (one thread per agent). Beside each wall time: the CPU seconds of this process
  (user + sys) per agent per check, and the wall ratio of 100 agents to one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("PE_DR_RETRY_DELAY_SCALE", "0.01")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

DRILL_SCALE = 0.005
FANOUT_SCALE = 0.001
AGENT_RUN_MODEL = 600.0  # modelled seconds of one agent run in the fan-out labs (0.6 s real)
FANOUT_AGENTS = (1, 10, 100)
OLD_BOUND = 16


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _sleeps(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "sleeps.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def union_seconds(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of `intervals`, clipped to [lo, hi]."""
    total, end = 0.0, lo
    clipped = [(max(a, lo), min(b, hi)) for a, b in intervals]
    for a, b in sorted((a, b) for a, b in clipped if b > a):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def critical_path(scale: float) -> dict[str, float]:
    from labsim.lab import DURATIONS as D

    up = {
        "primary": D["boot"] + D["install.primary"],
        "gitlab": D["boot"] + D["install.gitlab"],
        "replica": D["boot"] + D["install.replica"],
        "agent": D["boot"] + D["install.agent"],
    }
    path = D["box"] + max(up["primary"], up["gitlab"]) + max(up["replica"], up["agent"])
    return {"critical_path": path * scale, "serial": (D["box"] + sum(up.values())) * scale}


@contextlib.contextmanager
def lab_env(handle: Any) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(handle.env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --- the drill, in a child process ---------------------------------------------------------------


def drill_child(report_dir: str) -> None:
    """Run one drill in this process (lab and Prefect API from the environment); print JSON."""
    from flows import journal
    from flows.dr_drill import dr_drill
    from flows.params import Budgets, DrillParameters

    params = DrillParameters(
        confirm=["primary.vm"],
        budgets=Budgets(rto_seconds=60, replication_lag_seconds=30, failback_seconds=60),
        poll_interval_seconds=0.1,  # the least the product allows
        report_dir=report_dir,
    )
    profile_to = os.environ.get("PE_DR_BENCH_PROFILE")
    profiler = None
    if profile_to:  # `--profile DIR`: the built-lab drill under cProfile (its main thread)
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.time()
    cpu0 = time.process_time()
    state = dr_drill(params, return_state=True)
    cpu1 = time.process_time()
    t1 = time.time()
    if profiler is not None and profile_to:
        profiler.disable()
        profiler.dump_stats(profile_to)
    report = journal.record_of(state)
    print(
        json.dumps(
            {
                "ok": state.is_completed(),
                "t0": t0,
                "t1": t1,
                "cpu": cpu1 - cpu0,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "steps": [vars(s) for s in report.steps] if report else [],
            }
        )
    )


def _drill_in_child(env: dict[str, str], report_dir: Path) -> dict[str, Any]:
    """One drill in a child process (drill_child); its JSON line."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.drill_bench", "--drill-child", str(report_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the drill child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def bench_drill(tmp: Path, profile: Path | None = None) -> dict[str, Any]:
    from labsim.testing import running_lab

    with running_lab(tmp / "drill-lab", time_scale=DRILL_SCALE, agents=1) as handle:
        env = {**handle.environ(), "PYTHONPATH": str(Path.cwd())}
        out = _drill_in_child(env, tmp / "reports")
        child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        sleeps = _sleeps(handle.state_dir)
        mark, sleeps_mark = len(handle.journal()), len(_sleeps(handle.state_dir))
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            env["PE_DR_BENCH_PROFILE"] = str(profile / "drill.prof")
        with _py_spy(handle.state_dir, profile):
            built = _drill_in_child(env, tmp / "again")  # the same lab, now built
        calls = handle.journal()[mark:]
        built_sleeps = _sleeps(handle.state_dir)[sleeps_mark:]
    steps = out["steps"]
    ups = [s for s in steps if s["name"].startswith("vm-up ") or s["name"] == "ensure-box"]
    up_start = min(_epoch(s["started_at"]) for s in ups)
    up_end = max(_epoch(s["ended_at"]) for s in ups)
    wall = out["t1"] - out["t0"]
    modelled = union_seconds([(e["t0"], e["t1"]) for e in sleeps], out["t0"], out["t1"])
    modelled_sum = sum(
        min(e["t1"], out["t1"]) - max(e["t0"], out["t0"])
        for e in sleeps
        if e["t1"] > out["t0"] and e["t0"] < out["t1"]
    )
    if os.environ.get("PE_DR_BENCH_STEPS"):  # each step: its time, the lab's, the gap before it
        for label, run, marks in (("fresh", out, sleeps), ("built", built, built_sleeps)):
            end = run["t0"]
            print(f"{label} lab:", file=sys.stderr)
            for s in run["steps"]:
                a, b = _epoch(s["started_at"]), _epoch(s["ended_at"])
                busy = union_seconds([(e["t0"], e["t1"]) for e in marks], a, b)
                print(
                    f"  {s['chapter']:<20} {s['name']:<32} {b - a:7.3f} s  modelled {busy:7.3f}"
                    f" s  after a gap of {a - end:6.3f} s",
                    file=sys.stderr,
                )
                end = max(end, b)
            print(f"  (the run's end {run['t1'] - end:6.3f} s after)", file=sys.stderr)
    return {
        "ok": out["ok"],
        "bring_up": up_end - up_start,
        "wall": wall,
        "modelled": modelled,
        "modelled_sum": modelled_sum,
        "tasks": len(steps),
        "built_steps": len(built["steps"]),
        "built_vagrant": [c["detail"] for c in calls if c["op"] == "vagrant.command"],
        "built_ssh": sum(1 for c in calls if c["op"] == "ssh.connect"),
        "built_ssh_drill": sum(
            1 for c in calls if c["op"] == "ssh.login" and c["detail"] == "vagrant"
        ),
        "built_wall": built["t1"] - built["t0"],
        "built_cpu": built["cpu"],
        "built_modelled": union_seconds(
            [(e["t0"], e["t1"]) for e in built_sleeps], built["t0"], built["t1"]
        ),
        **between_steps(built),
        "maxrss_mb": out["maxrss_kb"] / 1024,
        "children_rss_mb": child_rss / 1024,
    }


def between_steps(drill: dict[str, Any]) -> dict[str, float]:
    """Where a drill's wall time went: inside its steps (from each task run's start to its end,
    as Prefect recorded them: the product's work and the lab's), and between them (creating
    task and subflow runs, their states, the run's start and close). A gap where the chapter
    changes is a subflow starting or ending."""
    spans = [(_epoch(s["started_at"]), _epoch(s["ended_at"]), s["chapter"]) for s in drill["steps"]]
    spans.sort()
    inside = union_seconds([(a, b) for a, b, _ in spans], drill["t0"], drill["t1"])
    chapter_edges, end, chapter = 0.0, drill["t0"], None
    within: list[float] = []  # one step's end to the next one's start, in one chapter
    for a, b, owner in spans:
        if owner != chapter and a > end:
            chapter_edges += a - end
        elif owner == chapter:
            within.append(max(a - end, 0.0))
        chapter, end = owner, max(end, b)
    return {
        "built_in_steps": inside,
        "built_between": (drill["t1"] - drill["t0"]) - inside,
        "built_chapter_edges": chapter_edges,
        "built_chapters": float(len({c for _, _, c in spans})),
        "built_gap_median": statistics.median(within) if within else 0.0,
        "built_gap_mean": statistics.fmean(within) if within else 0.0,
        "built_gaps": float(len(within)),
    }


@contextlib.contextmanager
def _py_spy(state_dir: Path, profile: Path | None) -> Iterator[None]:
    """With `--profile DIR` and py-spy installed: labsim's daemon sampled during the built-lab
    drill (DIR/daemon.txt, collapsed stacks, idle samples included: wall time)."""
    import shutil

    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    ready = state_dir / "daemon.ready"
    if profile is None or spy is None or not ready.exists():
        yield
        return
    pid = ready.read_text().strip()
    out = profile / "daemon.txt"
    cmd = [spy, "record", "--idle", "-r", "200", "-f", "raw", "-o", str(out), "-p", pid]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # py-spy attaches
        yield
    finally:
        proc.send_signal(2)  # SIGINT: py-spy writes what it sampled
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --- fan-out ----------------------------------------------------------------------------------


def _fan_out_once(spec: Any, bound: int) -> tuple[float, float, bool, float, float]:
    """(cold wall, warm wall, passed, cold CPU, warm CPU): cold as the first check of a process
    (SSH connections opened on the way); warm again (connections open, as a later step of a
    drill finds them: the Labs of a process share them). CPU is
    this process's own (user + sys, every thread; labsim's daemon is another process)."""
    from pe_dr.checks.agents import wait_for_server
    from pe_dr.lab.live import Lab, close_connections

    os.environ["PE_DR_MAX_PARALLEL_AGENTS"] = str(bound)
    close_connections()  # cold: no connection kept from an earlier check of this process
    walls, cpus, passed = [], [], True
    with Lab(spec) as lab:
        for _ in range(2):
            c0, t0 = time.process_time(), time.monotonic()
            result = wait_for_server(
                lab,
                name="failback",
                want=spec.primary.name,
                since=t0,
                budget_seconds=300,
                poll_interval=0.5,
            )
            walls.append(time.monotonic() - t0)
            cpus.append(time.process_time() - c0)
            passed = passed and result.passed
    return walls[0], walls[1], passed, cpus[0], cpus[1]


def bench_fan_out(tmp: Path, agents: int, bounds: tuple[int, ...]) -> dict[str, Any]:
    from flows.code_manager_setup import code_manager_setup
    from flows.lab_setup import lab_setup
    from flows.params import CodeManagerParameters, LabSetupParameters
    from labsim.testing import running_lab
    from pe_dr.lab.spec import load_spec

    with (
        running_lab(tmp / f"fan-{agents}", time_scale=FANOUT_SCALE, agents=agents) as handle,
        lab_env(handle),
    ):
        spec = load_spec(handle.spec_path)
        t0 = time.monotonic()
        lab_setup(LabSetupParameters(lab=spec))
        setup = time.monotonic() - t0
        # agent runs name the compiling server once code is deployed
        code_manager_setup(CodeManagerParameters(lab=spec))
        extra = AGENT_RUN_MODEL - _agent_model()
        handle.fault_add(f"slow:puppet.agent={extra:g}")
        walls = {bound: _fan_out_once(spec, bound) for bound in bounds}
    return {"agents": agents, "setup": setup, "walls": walls}


def _agent_model() -> float:
    from labsim.lab import DURATIONS

    return DURATIONS["agent"]


# --- the table ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drill_bench")
    parser.add_argument("--drill-child", metavar="REPORT_DIR")
    parser.add_argument("--only", choices=("drill", "fan-out"), help="one part of the benchmark")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="profile the built-lab drill: DIR/drill.prof (cProfile), DIR/daemon.txt (py-spy)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--api-url",
        metavar="URL",
        help="a running Prefect server's API instead of a temporary one on SQLite",
    )
    where.add_argument(
        "--postgres",
        action="store_true",
        help="a Prefect server of its own on PostgreSQL 15 (a private cluster, removed after)",
    )
    args = parser.parse_args()
    if args.drill_child:
        drill_child(args.drill_child)
        return

    import logging

    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from pe_dr.checks.result import max_parallel_agents

    logging.disable(logging.WARNING)
    default_bound = max_parallel_agents()
    # the default bound, the old one, and one agent per thread (no bound) for comparison
    bounds = tuple(dict.fromkeys((default_bound, OLD_BOUND, max(FANOUT_AGENTS))))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pe-dr-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(tmp / "prefect-results")
        with contextlib.ExitStack() as stack:
            api = args.api_url
            if args.postgres:
                from labsim.testing import prefect_server_on_postgres

                (tmp / "prefect-home").mkdir()
                api = stack.enter_context(prefect_server_on_postgres(tmp / "prefect-home"))
            if api:
                stack.enter_context(temporary_settings({PREFECT_API_URL: api}))
            else:
                stack.enter_context(prefect_test_harness(server_startup_timeout=120))
            os.environ["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
            drill: dict[str, Any] | None = None
            if args.only in (None, "drill"):
                drill = bench_drill(tmp, args.profile)
                _progress("drill", drill)
            fans: list[dict[str, Any]] = []
            for n in FANOUT_AGENTS if args.only in (None, "fan-out") else ():
                fans.append(bench_fan_out(tmp, n, bounds))
                _progress("fan-out", fans[-1])
    total = time.monotonic() - started
    label = "PostgreSQL 15" if args.postgres else args.api_url or "temporary, on SQLite"
    _print(drill, fans, bounds, total, label)


def _progress(what: str, figures: dict[str, Any]) -> None:
    print(f"bench: {what} {figures}", file=sys.stderr, flush=True)


def _print(
    drill: dict[str, Any] | None,
    fans: list[dict[str, Any]],
    bounds: tuple[int, ...],
    total: float,
    server: str,
) -> None:
    rows: list[tuple[str, str]] = [("Prefect server", server)]
    if drill is not None:
        rows += _drill_rows(drill)
    if fans:
        rows += _fan_rows(fans, bounds)
    rows.append(("benchmark wall", f"{total:.0f} s"))
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def _drill_rows(drill: dict[str, Any]) -> list[tuple[str, str]]:
    cp = critical_path(DRILL_SCALE)
    overhead = drill["wall"] - drill["modelled"]
    vagrant = drill["built_vagrant"]
    verbs: dict[str, int] = {}
    for command in vagrant:
        verbs[command.split()[0]] = verbs.get(command.split()[0], 0) + 1
    statuses = verbs.get("status", 0)
    built_overhead = drill["built_wall"] - drill["built_modelled"]
    return [
        ("drill (1 agent, fresh lab)", "passed" if drill["ok"] else "FAILED"),
        (
            f"bring-up wall / critical path (scale {DRILL_SCALE:g})",
            f"{drill['bring_up']:.2f} s / {cp['critical_path']:.2f} s = "
            f"{drill['bring_up'] / cp['critical_path']:.3f}  (serial: {cp['serial']:.2f} s)",
        ),
        (
            "drill wall; modelled lab time (union; sum)",
            f"{drill['wall']:.2f} s; {drill['modelled']:.2f} s; {drill['modelled_sum']:.2f} s",
        ),
        (
            "time outside the lab's work per task",
            f"{1000 * overhead / max(drill['tasks'], 1):.0f} ms  "
            f"({overhead:.2f} s over {drill['tasks']} tasks)",
        ),
        ("peak memory of the drill process", f"{drill['maxrss_mb']:.0f} MB (ru_maxrss)"),
        (
            "drill on a built lab: vagrant calls",
            f"{len(vagrant)} ({statuses} `vagrant status`) over {drill['built_steps']} steps: "
            + ", ".join(f"{verb} x{n}" for verb, n in sorted(verbs.items())),
        ),
        (
            "drill on a built lab: SSH connections",
            f"{drill['built_ssh']} ({drill['built_ssh_drill']} the drill's, as vagrant; the rest "
            "the lab's own git and ssh-keyscan)",
        ),
        (
            "drill on a built lab: overhead per step; CPU",
            f"{1000 * built_overhead / max(drill['built_steps'], 1):.0f} ms "
            f"({drill['built_wall']:.2f} s wall, {drill['built_modelled']:.2f} s modelled); "
            f"{drill['built_cpu']:.2f} s CPU in the drill process",
        ),
        (
            "drill on a built lab: in steps / between",
            f"{drill['built_in_steps']:.2f} s / {drill['built_between']:.2f} s = "
            f"{1000 * drill['built_between'] / max(drill['built_steps'], 1):.0f} ms a step, of "
            f"which {drill['built_chapter_edges']:.2f} s where a chapter starts or ends "
            f"({int(drill['built_chapters'])} chapters)",
        ),
        (
            "  ratio: between / in steps",
            f"{drill['built_between'] / max(drill['built_in_steps'], 1e-9):.2f}  "
            "(target: at most 1.5)",
        ),
        (
            "  a chapter's start and end",
            f"{drill['built_chapter_edges'] / max(drill['built_chapters'], 1):.3f} s a chapter  "
            "(target: at most 0.3 s)",
        ),
        (
            "drill on a built lab: from a step to the next",
            f"median {1000 * drill['built_gap_median']:.0f} ms, mean "
            f"{1000 * drill['built_gap_mean']:.0f} ms (the {int(drill['built_gaps'])} steps that "
            "follow a step of their chapter)",
        ),
    ]


def _fan_rows(fans: list[dict[str, Any]], bounds: tuple[int, ...]) -> list[tuple[str, str]]:
    """Per bound, cold and warm: wall (and its ratio to 1 agent), and this process's CPU per
    agent per check, side by side; then the wall ratio of the most agents to one."""
    rows = []
    one_run = AGENT_RUN_MODEL * FANOUT_SCALE
    for bound in bounds:
        for label, col in (("cold", 0), ("warm", 1)):
            base = fans[0]["walls"][bound][col]
            cells = []
            for fan in fans:
                wall, ok = fan["walls"][bound][col], fan["walls"][bound][2]
                cpu = fan["walls"][bound][3 + col]
                mark = "" if ok else " FAILED"
                cells.append(
                    f"{fan['agents']}: {wall:.2f} s x{wall / base:.2f}, "
                    f"CPU {1000 * cpu / fan['agents']:.1f} ms/agent{mark}"
                )
            key = f"fan-out {label}, bound {bound} (agent run {one_run:.1f} s)"
            rows.append((key, ";  ".join(cells)))
    if len(fans) > 1:
        last = fans[-1]
        cells = [
            f"bound {b}: cold x{last['walls'][b][0] / fans[0]['walls'][b][0]:.2f}, "
            f"warm x{last['walls'][b][1] / fans[0]['walls'][b][1]:.2f}"
            for b in bounds
        ]
        rows.append((f"fan-out wall {last['agents']} agents / 1 agent", ";  ".join(cells)))
    rows.append(
        (
            f"lab_setup wall (scale {FANOUT_SCALE:g})",
            ";  ".join(f"{f['agents']} agents: {f['setup']:.2f} s" for f in fans),
        )
    )
    return rows


if __name__ == "__main__":
    main()
