"""Run the fuzz targets one after another, each for a time budget.

    python bench/fuzz/run.py --budget 600 [--targets frames,upgrade,...]

Per target: the seed corpus (bench/fuzz/corpus/<target>/, written from the
tests by seeds.py, committed) and a grown corpus (bench/fuzz/work/<target>/,
gitignored, where libFuzzer adds what it finds); ``-timeout`` per input,
``-rss_limit_mb``, ``-max_total_time``; a crash, timeout or OOM input goes to
bench/fuzz/findings/<target>/ (gitignored; minimized next to it) and the
target restarts for the rest of its budget. Prints per target: executions,
coverage (cov/ft of libFuzzer's last stats line), findings.
See docs/development.md#fuzzing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import seeds  # noqa: E402

TARGETS = ("frames", "upgrade", "response", "inflate", "json_apps")
STATS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)", re.M)
EXECUTED = re.compile(r"stat::number_of_executed_units: (\d+)")
KINDS = ("crash", "timeout", "oom", "leak", "slow-unit")


def run_bounded(cmd, log, seconds):
    """Run ``cmd`` (output appended to ``log``) for at most ``seconds``."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


def findings(directory):
    return {f for f in os.listdir(directory) if f.startswith(KINDS) and not f.endswith(".min")}


def fuzz(target, budget, args):
    seed_dir = seeds.write(target)
    work = os.path.join(HERE, "work", target)
    found_dir = os.path.join(HERE, "findings", target)
    os.makedirs(work, exist_ok=True)
    os.makedirs(found_dir, exist_ok=True)
    log = os.path.join(HERE, "work", f"{target}.log")
    open(log, "wb").close()
    script = os.path.join(HERE, f"{target}.py")
    before = findings(found_dir)
    deadline = time.monotonic() + budget
    result = {"target": target, "executions": 0, "cov": 0, "ft": 0, "runs": 0, "exit_codes": []}
    while result["runs"] < args.max_restarts + 1:
        left = int(deadline - time.monotonic())
        if left < 5:
            break
        text_before = os.path.getsize(log)
        cmd = [sys.executable, script, work, seed_dir, f"-max_total_time={left}", f"-timeout={args.timeout}",
               f"-rss_limit_mb={args.rss_limit_mb}", f"-artifact_prefix={found_dir}/", "-print_final_stats=1",
               *args.libfuzzer]
        code = run_bounded(cmd, log, left + 120)
        result["runs"] += 1
        result["exit_codes"].append(code)
        with open(log, "rb") as f:
            f.seek(text_before)
            text = f.read().decode("utf-8", "replace")
        executed = EXECUTED.findall(text)
        stats = STATS.findall(text)
        if executed:
            result["executions"] += int(executed[-1])
        elif stats:
            result["executions"] += int(stats[-1][0])
        if stats:
            result["cov"] = max(result["cov"], int(stats[-1][1]))
            result["ft"] = max(result["ft"], int(stats[-1][2]))
        if code == 0:
            break
    new = sorted(findings(found_dir) - before)
    result["findings"] = new
    for kind in KINDS:
        result[kind] = sum(1 for f in new if f.startswith(kind))
    for name in new:  # minimize each, bounded
        if args.minimize <= 0 or not name.startswith("crash"):
            continue
        path = os.path.join(found_dir, name)
        run_bounded([sys.executable, script, "-minimize_crash=1", f"-max_total_time={args.minimize}",
                     f"-timeout={args.timeout}", f"-exact_artifact_path={path}.min", path],
                    os.path.join(HERE, "work", f"{target}.minimize.log"), args.minimize + 60)
    result["log"] = os.path.relpath(log)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=600, help="seconds per target (default 600)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated (default: all)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds per input (libFuzzer -timeout)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    parser.add_argument("--max-restarts", type=int, default=10, help="restarts after a finding, per target")
    parser.add_argument("--minimize", type=int, default=60, help="seconds to minimize each crash (0: off)")
    parser.add_argument("libfuzzer", nargs="*", help="more libFuzzer flags (after --)")
    args = parser.parse_args()
    targets = [t for t in args.targets.replace(" ", ",").split(",") if t]
    for t in targets:
        if t not in TARGETS:
            parser.error(f"unknown target {t!r} (known: {', '.join(TARGETS)})")
    results = []
    for target in targets:
        print(f"fuzzing {target} for {args.budget}s ...", flush=True)
        result = fuzz(target, args.budget, args)
        results.append(result)
        print(f"  {target}: {result['executions']} executions, cov {result['cov']} ft {result['ft']}, "
              f"crashes {result['crash']}, timeouts {result['timeout']}, ooms {result['oom']}, "
              f"runs {result['runs']} {result['exit_codes']}", flush=True)
        for name in result["findings"]:
            print(f"    bench/fuzz/findings/{target}/{name}", flush=True)
    with open(os.path.join(HERE, "work", "summary.json"), "w") as f:
        json.dump(results, f, indent=2)
    print()
    print(f"{'target':<10} {'executions':>11} {'cov':>5} {'ft':>6} {'crashes':>8} {'timeouts':>9} {'ooms':>5}")
    for r in results:
        print(f"{r['target']:<10} {r['executions']:>11} {r['cov']:>5} {r['ft']:>6} {r['crash']:>8} "
              f"{r['timeout']:>9} {r['oom']:>5}")
    return 1 if any(r["findings"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
