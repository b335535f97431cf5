"""Ray or Dask distributed for `hubwatch backfill`: the measurements the choice rests on.

For each engine that is importable, on a local cluster of 2 single-threaded worker processes:
start-up (cluster and client ready), latency of one round trip, overhead per task over 2,000
no-op tasks, resident memory of every process the engine started, and what happens when a worker
process is SIGKILLed while it runs a task (is the task run again elsewhere, and how long it takes).
Install size is measured apart (`pip install --target DIR ray` / `distributed`, then `du -sh DIR`).

    PYTHONPATH=/tmp/ray-target python benchmarks/engines.py ray
    PYTHONPATH=/tmp/dask-target python benchmarks/engines.py dask
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time

WORKERS = 2
TASKS = 2000
ROUND_TRIPS = 50
# A task long enough to be killed mid-run, short enough to keep the run quick.
SLOW_TASK_S = 3.0


def noop(x: int) -> int:
    return x


def slow_pid(_: int) -> int:
    time.sleep(SLOW_TASK_S)
    return os.getpid()


def pid(_: int) -> int:
    return os.getpid()


def descendants_rss_mib(root: int) -> float:
    """Resident memory of ``root`` and every process below it, from /proc (no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total_kib, todo = 0, [root]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as fh:
                total_kib += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total_kib / 1024


def report(name: str, started: float, ready: float, run) -> None:
    """``run``: submit(fn, arg) -> future, gather(futures) -> results, for this engine."""
    submit, gather = run
    gather([submit(noop, 0)])  # warm: workers imported, functions shipped
    trips = []
    for i in range(ROUND_TRIPS):
        t = time.perf_counter()
        gather([submit(noop, i)])
        trips.append(time.perf_counter() - t)
    t = time.perf_counter()
    gather([submit(noop, i) for i in range(TASKS)])
    per_task = (time.perf_counter() - t) / TASKS
    rss = descendants_rss_mib(os.getpid())
    print(f"{name}: start-up {ready - started:.2f} s; round trip p50 {statistics.median(trips) * 1e3:.1f} ms; "
          f"{per_task * 1e3:.2f} ms/task over {TASKS} tasks; RSS of driver + cluster {rss:.0f} MiB")


def kill_one_worker_mid_task(name: str, run) -> None:
    submit, gather = run
    worker_pids = set(gather([submit(pid, i) for i in range(20)]))
    futures = [submit(slow_pid, i) for i in range(WORKERS)]
    time.sleep(SLOW_TASK_S / 3)
    victim = min(worker_pids)
    os.kill(victim, signal.SIGKILL)
    t = time.perf_counter()
    try:
        done = gather(futures)
        print(f"{name}: SIGKILL of worker {victim} mid-task: all {len(done)} tasks completed "
              f"{time.perf_counter() - t:.1f} s later (ran on {sorted(set(done))})")
    except Exception as exc:  # what the engine raises is the finding
        print(f"{name}: SIGKILL of worker {victim} mid-task: {type(exc).__name__}: {str(exc)[:200]}")


def bench_ray() -> None:
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    remote_fns = {f: ray.remote(num_cpus=1)(f) for f in (noop, slow_pid, pid)}
    run = (lambda f, x: remote_fns[f].remote(x), ray.get)
    ready = time.perf_counter()
    report(f"ray {ray.__version__}", started, ready, run)
    kill_one_worker_mid_task("ray", run)
    ray.shutdown()


def bench_dask() -> None:
    import distributed

    started = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                       dashboard_address="127.0.0.1:0", host="127.0.0.1")
    client = distributed.Client(cluster)
    ready = time.perf_counter()
    run = (lambda f, x: client.submit(f, x, pure=False), client.gather)
    report(f"dask distributed {distributed.__version__}", started, ready, run)
    kill_one_worker_mid_task("dask", run)
    client.close()
    cluster.close()


if __name__ == "__main__":
    engines = {"ray": bench_ray, "dask": bench_dask}
    for engine in sys.argv[1:] or list(engines):
        engines[engine]()
