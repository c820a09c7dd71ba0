"""GPU time of a profiled step by compiled graph: which of the step's graphs (G's encoder, backbone, field,
super-resolution, D; forward or backward) the kernels' time goes to, and the top kernels of each.

Reads the chrome trace that ``python -m _scripts.bench.models --profile --profile-trace FILE.json.gz``
writes.  Each kernel is charged to the inductor graph call (``## Call CompiledFxGraph <hash>``) whose CPU
range holds the launch (a CUDA-graph replay included), or to "eager" with its launch API.  The graphs are
listed in launch order, so G main's forward graphs come first, then D's, then the backward graphs in
reverse; a graph called twice (the field: coarse and fine samples) is listed twice.

    python -m _scripts.bench.trace_kernels trace.json.gz --top 5
"""
from __future__ import annotations

import argparse
import bisect
import gzip
import json
from collections import defaultdict

from training.errors import UserError, cli_main

GRAPH_CALL = "## Call CompiledFxGraph "
DEVICE_EVENTS = ("kernel", "gpu_memset", "gpu_memcpy")


def load_trace(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt") as f:
            trace = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such trace file") from None
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a chrome trace ({type(e).__name__}: {e})") from None
    events = trace.get("traceEvents") if isinstance(trace, dict) else trace
    if not isinstance(events, list):
        raise UserError(f"{path}: no traceEvents list in the trace")
    return events


def kernels_by_graph(events: list[dict]) -> list[dict]:
    """[{'graph': name, 'ms': total, 'kernels': {kernel name: [count, ms]}}] in launch order."""
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    calls = defaultdict(list)           # thread -> graph-call ranges sorted by start
    for e in events:
        if e.get("name", "").startswith(GRAPH_CALL) and "dur" in e:
            calls[e.get("tid")].append(e)
    starts = {}
    for tid, ranges in calls.items():
        ranges.sort(key=lambda e: e["ts"])
        starts[tid] = [e["ts"] for e in ranges]
    groups: dict[tuple, dict] = {}
    for k in events:
        if k.get("cat") not in DEVICE_EVENTS:
            continue
        launch = launches.get(k.get("args", {}).get("correlation"))
        key, order = ("eager (unmatched)", float("inf")), float("inf")
        if launch is not None:
            tid, ts = launch.get("tid"), launch["ts"]
            i = bisect.bisect_right(starts.get(tid, []), ts) - 1
            # the innermost range holding the launch: the latest start whose range still covers it
            while i >= 0 and calls[tid][i]["ts"] + calls[tid][i]["dur"] < ts:
                i -= 1
            if i >= 0:
                call = calls[tid][i]
                key = (call["name"][len(GRAPH_CALL):len(GRAPH_CALL) + 12], call["ts"])
                order = call["ts"]
            else:
                key, order = (f"eager ({launch['name']})", float("inf")), float("inf")
        g = groups.setdefault(key, {"graph": key[0], "order": order, "ms": 0.0, "kernels": defaultdict(lambda: [0, 0.0])})
        ms = k.get("dur", 0) / 1000
        g["ms"] += ms
        g["kernels"][k.get("name", "?")][0] += 1
        g["kernels"][k.get("name", "?")][1] += ms
    out = sorted(groups.values(), key=lambda g: (g["order"], g["graph"]))
    for g in out:
        g.pop("order")
        g["kernels"] = dict(g["kernels"])
    return out


def report(groups: list[dict], top: int, width: int = 100) -> str:
    total = sum(g["ms"] for g in groups)
    lines = [f"GPU time {total:.1f} ms in {sum(sum(c for c, _ in g['kernels'].values()) for g in groups)} "
             f"device events"]
    for g in groups:
        n = sum(c for c, _ in g["kernels"].values())
        lines.append(f"{g['ms']:8.2f} ms  {100 * g['ms'] / max(total, 1e-9):5.1f} %  {g['graph']}  ({n} kernels)")
        for name, (count, ms) in sorted(g["kernels"].items(), key=lambda kv: -kv[1][1])[:top]:
            lines.append(f"      {ms:7.2f} ms x{count:<4d} {name[:width]}")
    return "\n".join(lines)


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m _scripts.bench.trace_kernels", description=__doc__.split("\n")[0])
    p.add_argument("trace", help="chrome trace (.json or .json.gz) of _scripts.bench.models --profile-trace")
    p.add_argument("--top", type=int, default=5, help="kernels listed per graph (default 5)")
    a = p.parse_args(argv)
    groups = kernels_by_graph(load_trace(a.trace))
    if not groups:
        raise UserError(f"{a.trace}: no GPU kernels in the trace (profiled on a CPU?)")
    print(report(groups, a.top))
    return groups


if __name__ == "__main__":
    main()
