"""A longer fuzz run of every parser that reads Hub bytes (issue #7): only clean errors may come out.

    python3 benchmarks/fuzz_parsers.py                      # every target, 40 s each (~6 min)
    python3 benchmarks/fuzz_parsers.py --seconds-per-target 5 --target gguf --target engine --seed 3

What it measures. The contract (fingerprints/errors.py) is that on bad input a parser raises a
``FingerprintError`` subclass. Each target of tests/fuzz_targets.py (safetensors headers, GGUF,
sentencepiece protobuf, tokenizer.json, vocab.txt, vocab.json+merges.txt, tiktoken, config.json
and the whole engine over a tiny in-memory model folder) is fed mutations of its valid seeds for
``--seconds-per-target`` seconds: bit flips, random byte runs, boundary integers (0, 1, 2^31-1,
2^32-1, 2^63, 2^64-1) planted as u32/u64, truncation, insertion, deletion, chunk duplication,
splicing between seeds, and for JSON files tree mutations (a node replaced by another type, huge
ints, NaN/Infinity, very long strings, deep nesting). Per input the outcome is one of:

* clean error: a FingerprintError (the parser rejected the input as it should);
* accepted: the parser returned (the mutation kept the file valid, or it was tolerated);
* crash: any other exception, MemoryError included: each target runs in a forked child under
  ``RLIMIT_AS`` (``--mem-limit-gib`` over what the child already maps), so a runaway allocation
  fails there instead of swapping the machine;
* hang: the input ran past ``--input-timeout`` (an ``ITIMER_REAL`` alarm interrupts it).

The table gives per target the inputs tried, each outcome, the slowest input (ms) and the child's
peak RSS (MiB). Input ``i`` of a target is a pure function of (--seed, target, i). The first
input of each distinct crash (exception type + innermost hubwatch frame) is saved under
.fixtures/fuzz-crashes/<target>/<signature>/ (gitignored): the model files and traceback.txt.
Exit status 1 when anything crashed or hung.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import random
import resource
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import fuzz_targets  # noqa: E402
from fingerprints.errors import FingerprintError  # noqa: E402

DEFAULT_SECONDS = 40.0
DEFAULT_INPUT_TIMEOUT_S = 5.0
DEFAULT_MEM_LIMIT_GIB = 3.0
CRASH_DIR = ROOT / ".fixtures" / "fuzz-crashes"


class Hang(BaseException):
    """Raised by the alarm; a BaseException so a parser's ``except Exception`` cannot swallow it."""


def _on_alarm(signum, frame):
    raise Hang()


def _mapped_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def crash_signature(exc: BaseException) -> str:
    """Exception type and the innermost frame in hubwatch's code (or the innermost frame at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/fingerprints/" in f.filename] or frames[-1:]
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__} at {where}"


def save_crash(target: str, signature: str, files: dict[str, bytes], mutated: str, index: int, seed: int, tb: str) -> Path:
    folder = CRASH_DIR / target / hashlib.sha1(signature.encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "traceback.txt").write_text(
        f"{signature}\ntarget {target}, --seed {seed}, input {index}, mutated file {mutated}\n\n{tb}")
    return folder


def fuzz_target(name: str, seconds: float, seed: int, input_timeout: float, mem_limit_gib: float) -> dict:
    """Run one target in this (child) process; returns its figures."""
    headroom = int(mem_limit_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (_mapped_bytes() + headroom, resource.RLIM_INFINITY))
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, _on_alarm)
    target = fuzz_targets.build_targets()[name]
    pool = [data for t in fuzz_targets.build_targets().values() for s in t.seeds for data in s.values()]
    stats = {"target": name, "inputs": 0, "clean": 0, "accepted": 0, "crashes": 0, "hangs": 0,
             "slowest_ms": 0.0, "findings": {}}
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        rng = random.Random(f"{seed}:{name}:{i}")
        files, mutated = fuzz_targets.mutate_input(rng, target, pool)
        t0 = time.perf_counter()
        outcome, exc = "accepted", None
        signal.setitimer(signal.ITIMER_REAL, input_timeout)
        try:
            target.run(files)
        except FingerprintError:
            outcome = "clean"
        except Hang as e:
            outcome, exc = "hangs", e
        except BaseException as e:  # noqa: BLE001 - anything else is the finding
            outcome, exc = "crashes", e
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed_ms = (time.perf_counter() - t0) * 1000
        stats["slowest_ms"] = max(stats["slowest_ms"], elapsed_ms)
        stats["inputs"] += 1
        stats[outcome] += 1
        if exc is not None:
            sig = "hang" if outcome == "hangs" else crash_signature(exc)
            finding = stats["findings"].setdefault(sig, {"count": 0, "first_input": i, "saved": None})
            finding["count"] += 1
            if finding["saved"] is None:
                tb = "".join(traceback.format_exception(exc))
                finding["saved"] = str(save_crash(name, sig, files, mutated, i, seed, tb).relative_to(ROOT))
        i += 1
    stats["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return stats


def _child(conn, *args) -> None:
    try:
        conn.send(fuzz_target(*args))
    except BaseException:  # noqa: BLE001 - report the fuzzer's own failure to the parent
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def run_in_child(name: str, seconds: float, seed: int, input_timeout: float, mem_limit_gib: float) -> dict:
    """Fork a child per target: a fresh address-space limit and RSS figure, and a watchdog for a
    hang the alarm cannot interrupt (one stuck in C code, or in the engine's worker thread)."""
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child_end, name, seconds, seed, input_timeout, mem_limit_gib))
    proc.start()
    child_end.close()
    if parent_end.poll(seconds + 10 * input_timeout + 60):
        try:
            result = parent_end.recv()
        except EOFError:
            result = {"error": f"child died with exit code {proc.join() or proc.exitcode}"}
    else:
        proc.kill()
        result = {"error": "child stuck past its deadline (a hang the alarm could not interrupt)"}
    proc.join()
    if "error" in result:
        return {"target": name, "inputs": 0, "clean": 0, "accepted": 0, "crashes": 0, "hangs": 1,
                "slowest_ms": float("nan"), "peak_rss_mib": float("nan"), "findings": {result["error"]: {"count": 1}}}
    return result


def main(argv: list[str] | None = None) -> int:
    targets = list(fuzz_targets.build_targets())
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds-per-target", type=float, default=DEFAULT_SECONDS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", action="append", choices=targets, help="repeatable; default every target")
    ap.add_argument("--input-timeout", type=float, default=DEFAULT_INPUT_TIMEOUT_S, help="seconds before an input is a hang")
    ap.add_argument("--mem-limit-gib", type=float, default=DEFAULT_MEM_LIMIT_GIB,
                    help="address space each target's child may map beyond its start")
    args = ap.parse_args(argv)

    rows = []
    for name in args.target or targets:
        rows.append(run_in_child(name, args.seconds_per_target, args.seed, args.input_timeout, args.mem_limit_gib))
        r = rows[-1]
        print(f"  {name}: {r['inputs']:,} inputs, {r['crashes']} crashes, {r['hangs']} hangs", file=sys.stderr, flush=True)

    header = ("target", "inputs", "clean errors", "accepted", "crashes", "hangs", "slowest (ms)", "peak RSS (MiB)")
    table = [header] + [(r["target"], f"{r['inputs']:,}", f"{r['clean']:,}", f"{r['accepted']:,}", str(r["crashes"]),
                         str(r["hangs"]), f"{r['slowest_ms']:.0f}", f"{r['peak_rss_mib']:.0f}") for r in rows]
    widths = [max(len(row[c]) for row in table) for c in range(len(header))]
    print(f"fuzz_parsers: --seed {args.seed}, {args.seconds_per_target:g} s per target, "
          f"input timeout {args.input_timeout:g} s, +{args.mem_limit_gib:g} GiB address space")
    for n, row in enumerate(table):
        print("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    bad = False
    for r in rows:
        for sig, f in r["findings"].items():
            bad = True
            print(f"{r['target']}: {sig} x{f['count']}" + (f" -> {f['saved']}" if f.get("saved") else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
