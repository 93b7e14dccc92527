#!/usr/bin/env python3
"""The end-to-end suite on one local cluster (`make e2e`, `make test-engine`): the cluster comes up
once (tools/realcluster.py), the test modules run against it as jobs side by side, and it goes down
at the end, whatever happened.

    e2e.py [--engine simulator|vllm] [--keep-cluster] [--only JOB ...]

A job is one pytest process running its modules (or tests) in order. Jobs start, in the order of
the table below, as soon as what they need is free: the jobs they come after, their share of the
real node (every release's webhook replicas run there, and the CPU engines and benchmark clients:
two cores, about 23 GiB; each job states its peak CPU and memory requests, and the jobs running
side by side stay within the budget, so no pod waits for room), and the cluster to themselves for a
job that wants it (`alone`). Jobs side by side must not disturb each other: the modules that select
GPUs use the default kwok nodes, which have room for all of them at once (realcluster.GPU_NODES), or
a pool of their own (nodes tainted for their releases alone: test_02_e2e.py, test_04_partitions.py).

Each job's output goes to .tools/logs/e2e-<job>.log and is printed when it ends; each module records
its seconds in the stage table (tools/stages.py), each job its wall clock."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import realcluster  # noqa: E402
import stages  # noqa: E402

E2E = "tests/e2e"
SEEDS = f"{E2E}/test_03_seed_commands.py"


@dataclass(frozen=True)
class Job:
    """One pytest process: its tests in order, and what it holds of the real node while it runs."""

    name: str
    tests: tuple[str, ...]  # pytest node ids, run in this order
    cpu: float  # cores of CPU requests on the real node at its peak (webhook replicas, engines, clients)
    memory: float  # GiB of memory requests there
    alone: bool = False  # nothing else may run beside it
    after: tuple[str, ...] = ()  # jobs that must have ended before it starts
    excludes: tuple[str, ...] = ()  # jobs that must not run beside it


# The real node: 2 cores, about 23 GiB allocatable; the monitoring stack holds 0.16 cores and 0.4 GiB.
# The rest is what the jobs may hold.
CPU_BUDGET = 1.8
MEMORY_BUDGET = 22.0
MAX_JOBS = 4  # side by side (each pytest process and its helm/kubectl children cost CPU of their own)

# make e2e: the engine simulator serves the chart-, rules-, alert-, autoscaling- and tune-tests; the
# real vLLM CPU engine serves the demo's release and test_01_real_engine.py. In order of priority:
# the longest chains first (measured: engine 150 s, monitoring 290, autoscaling 275, seeds-c 240,
# prod 220, partitions 180, seeds-a 180, seeds-b 170, tune 120, rollout 55, each beside others).
SIMULATOR_JOBS: list[Job] = [
    # the demo's seed release (2 webhook replicas) and its CPU release (vLLM: one core, 5 GiB)
    Job("engine", (f"{E2E}/test_00_demo.py", f"{E2E}/test_01_real_engine.py"), cpu=1.5, memory=6.5),
    # a simulator (5 GiB: the CPU recipe's), its webhooks, the benchmark client (1 GiB)
    Job("monitoring", (f"{E2E}/test_06_monitoring.py",), cpu=0.45, memory=7.0),
    # two simulators, the router in front of them, the client, KEDA's operator and metrics server
    Job("autoscaling", (f"{E2E}/test_07_autoscaling.py",), cpu=0.8, memory=12.1),
    Job(
        "seeds-c",
        (
            f"{SEEDS}::test_seed_disaster_recovery_and_debug",
            f"{SEEDS}::test_a_selection_that_cannot_succeed_fails_the_hook_at_once_with_its_reason",
            f"{SEEDS}::test_manual_mode_that_cannot_be_placed_fails_fast_with_what_to_set",
        ),
        cpu=0.3,
        memory=0.8,
    ),
    # its own node pool; its webhook kept to its own namespaces
    Job("prod", (f"{E2E}/test_02_e2e.py",), cpu=0.25, memory=1.5),
    Job("seeds-a", (f"{SEEDS}::test_seed_command_installs_and_lands_on_its_product",), cpu=0.3, memory=0.8),
    Job(
        "seeds-b",
        (f"{SEEDS}::test_seed_custom_recipe_development", f"{SEEDS}::test_seed_multi_model_side_by_side"),
        cpu=0.55,
        memory=1.2,
    ),
    Job("partitions", (f"{E2E}/test_04_partitions.py",), cpu=0.25, memory=1.5),
    Job("tune", (f"{E2E}/test_08_tune.py",), cpu=0.4, memory=7.0),
    # two simulators (a sliver of a core, the CPU recipe's 5 GiB each), the router, its webhooks; a
    # recipe change surges a third pod for about 40 s only where the node has room for it then (the
    # hook decides from the free memory; without room the change is rolling, 0 failed all the same)
    Job("router", (f"{E2E}/test_09_router.py",), cpu=0.5, memory=10.6),
    # crane's registry on loopback, make publish into it, an install from oci:// (two webhook pods,
    # the hooks; no engine): the node pulls our image
    Job("oci", (f"{E2E}/test_10_oci.py",), cpu=0.2, memory=1.5),
    # It counts failed recipe Pod creations, which the webhook of a seed command's release starting
    # up would cause (those see every namespace; the other modules' releases keep to their own).
    Job(
        "rollout",
        (f"{E2E}/test_05_webhook_rollout.py",),
        cpu=0.3,
        memory=0.5,
        excludes=("engine", "seeds-a", "seeds-b", "seeds-c"),
    ),
]
# make test-engine: the real engine throughout, one module at a time (one engine fits the node).
ENGINE_JOBS: list[Job] = [
    Job("engine", (f"{E2E}/test_00_demo.py", f"{E2E}/test_01_real_engine.py"), cpu=1.5, memory=7.0),
    Job("monitoring", (f"{E2E}/test_06_monitoring.py",), cpu=1.6, memory=6.0, after=("engine",)),
    Job("autoscaling", (f"{E2E}/test_07_autoscaling.py",), cpu=1.6, memory=11.0, after=("monitoring",)),
    Job("tune", (f"{E2E}/test_08_tune.py",), cpu=1.6, memory=6.0, after=("autoscaling",)),
]
JOB_TIMEOUT = 1800  # seconds a job may take before it is stopped


@dataclass
class Running:
    job: Job
    proc: subprocess.Popen[bytes]
    log: Path
    t0: float
    started: float


def schedule(jobs: list[Job], *, env: dict[str, str], marker: str) -> list[str]:
    """Start each job, in order, as soon as what it needs is free (its predecessors ended, the
    node's CPU and memory budget, nothing alone running); returns the jobs that failed."""
    logs = ROOT / ".tools" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending = list(jobs)
    running: list[Running] = []
    done: set[str] = set()
    failed: list[str] = []
    while pending or running:
        for r in list(running):
            rc = r.proc.poll()
            if rc is None and time.monotonic() - r.t0 > JOB_TIMEOUT:
                r.proc.kill()
                rc = r.proc.wait()
                print(f">> job {r.job.name} ran past {JOB_TIMEOUT} s and was stopped", flush=True)
            if rc is None:
                continue
            running.remove(r)
            done.add(r.job.name)
            seconds = time.monotonic() - r.t0
            print(f"\n==== e2e job {r.job.name}: {'passed' if rc == 0 else f'FAILED (exit {rc})'} in {seconds:.0f} s", flush=True)
            sys.stdout.write(r.log.read_text(errors="replace"))
            sys.stdout.flush()
            stages.record(f"e2e job: {r.job.name}", seconds, "ran" if rc == 0 else "failed", started=r.started)
            if rc != 0:
                failed.append(r.job.name)
        for job in list(pending):
            cpu = sum(r.job.cpu for r in running)
            memory = sum(r.job.memory for r in running)
            if any(r.job.alone for r in running) or (job.alone and running) or len(running) >= MAX_JOBS:
                break
            if not set(job.after) <= done:
                continue
            names = {r.job.name for r in running}
            if names & set(job.excludes) or any(job.name in r.job.excludes for r in running):
                continue
            if running and (cpu + job.cpu > CPU_BUDGET or memory + job.memory > MEMORY_BUDGET):
                continue
            pending.remove(job)
            log = logs / f"e2e-{job.name}.log"
            cmd = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-s",
                "-p",
                "no:cacheprovider",
                "-m",
                marker,
                "--durations=10",
                *job.tests,
            ]
            beside = ", ".join(r.job.name for r in running) or "nothing"
            print(f">> e2e job {job.name} starts beside {beside} (log: {log})", flush=True)
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    cmd, cwd=ROOT, env={**env, "AIM_E2E_LANE": job.name}, stdout=out, stderr=subprocess.STDOUT
                )
            running.append(Running(job, proc, log, time.monotonic(), time.time()))
        time.sleep(1)
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="e2e.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=["simulator", "vllm"], default="simulator")
    p.add_argument("--keep-cluster", action="store_true", help="leave the cluster running (make cluster-down removes it)")
    p.add_argument("--only", action="append", default=[], metavar="JOB", help="run these jobs only")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("the local e2e cluster needs root (containerd, kubelet, iptables): run `sudo make e2e`", file=sys.stderr)
        return 2
    jobs = SIMULATOR_JOBS if args.engine == "simulator" else ENGINE_JOBS
    if args.only:
        known = {job.name for job in jobs}
        unknown = sorted(set(args.only) - known)
        if unknown:
            print(f"unknown job(s) {', '.join(unknown)}: choose from {', '.join(sorted(known))}", file=sys.stderr)
            return 2
        # The chosen jobs keep their exclusions (a rollout beside a seed job counted that webhook's refusals).
        jobs = [dataclasses.replace(j, after=tuple(a for a in j.after if a in args.only)) for j in jobs if j.name in args.only]
    # The engine suite runs every test; make e2e leaves out the long real-engine runs (marker `engine`).
    marker = "e2e" if args.engine == "vllm" else "e2e and not engine"
    state = realcluster.DEFAULT_STATE  # where `make cluster-down` finds it if this run is killed
    t0, started = time.monotonic(), time.time()
    try:
        cluster = realcluster.up(state)
    except BaseException:
        stages.record("e2e: cluster up", time.monotonic() - t0, "failed", started=started)
        raise
    stages.record("e2e: cluster up", time.monotonic() - t0, "ran", started=started)
    env = {
        **os.environ,
        "AIM_E2E_KUBECONFIG": str(cluster.kubeconfig),
        "AIM_E2E_LOCAL": "1",
        "AIM_E2E_ENGINE": args.engine,
    }
    failed: list[str] = []
    try:
        failed += schedule(jobs, env=env, marker=marker)
    finally:
        if args.keep_cluster:
            print(f">> the cluster stays up: KUBECONFIG={cluster.kubeconfig}; make cluster-down removes it")
        else:
            t1, started = time.monotonic(), time.time()
            left = realcluster.down(state)
            stages.record("e2e: cluster down", time.monotonic() - t1, "failed" if left else "ran", started=started)
            if left:
                print(f">> teardown left processes behind: {left}", file=sys.stderr)
                failed.append("teardown")
    total = time.monotonic() - t0
    if failed:
        print(f"\n>> e2e: FAILED in {total:.0f} s: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\n>> e2e: passed in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
