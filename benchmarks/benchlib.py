"""Shared helpers for honest throughput benchmarks on a shared, noisy machine.

- `run_interleaved`: run every arm once per round, for several rounds, rotating the order, so that
  a busy moment of the machine hits all arms alike instead of one;
- `Watch`: while an arm runs, the machine's busy cores and steal (/proc/stat), the CPU time of
  this process tree by process (psutil: the driver, raylet, GCS, Ray workers by their title),
  hence what other users' processes took, and the nice level of every process of the tree;
- `summarise` / `print_report`: median and spread (min-max and interquartile range) per arm, the
  ratio of medians and the per-round ratios, the load average before and after, the nice levels.

A sample taken while other processes used more than `BUSY_OTHERS` cores is flagged with `*`.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BUSY_OTHERS = (
    0.5  # cores used by processes outside the benchmark: above this a sample is "disturbed"
)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}"


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _proc_stat() -> tuple[int, int, int]:
    """(busy, steal, total) clock ticks of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    steal = v[7] if len(v) > 7 else 0
    total = sum(v[:8])
    return total - idle - steal, steal, total


def _group(title: str) -> str:
    """A readable group name for a process of the tree."""
    if title.startswith("ray::"):
        name = title.split(" ")[0]
        head, close, _ = name.rpartition(")")
        return head + close if close else name.split(".")[0]
    for key in ("raylet", "gcs_server", "dashboard", "log_monitor", "runtime_env", "monitor.py"):
        if key in title:
            return key
    return title.split(" ")[0][-40:]


@dataclass
class Watch:
    """Samples this process tree every `interval` s while running (use as a context manager)."""

    interval: float = 0.25
    cpu: dict[int, tuple[float, float]] = field(default_factory=dict)  # pid -> (first, last) secs
    titles: dict[int, dict[str, int]] = field(default_factory=dict)  # pid -> group -> samples
    nice: dict[str, set[int]] = field(default_factory=dict)
    busy_cores: float = 0.0
    steal_cores: float = 0.0
    seconds: float = 0.0

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    secs = t.user + t.system
                    title = "driver" if p.pid == me.pid else " ".join(p.cmdline()) or p.name()
                    level = p.nice()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            first = self.cpu.get(p.pid, (0.0 if self._started else secs, secs))[0]
            self.cpu[p.pid] = (first, secs)
            seen = self.titles.setdefault(p.pid, {})
            seen[_group(title)] = seen.get(_group(title), 0) + 1
            self.nice.setdefault(_group(title), set()).add(level)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Watch:
        self._started = False
        self._sample()
        self._started = True
        self._stat0 = _proc_stat()
        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = time.perf_counter() - self._t0
        busy, steal, total = (b - a for a, b in zip(self._stat0, _proc_stat()))
        ncpu = os.cpu_count() or 1
        self.busy_cores = ncpu * busy / max(1, total)
        self.steal_cores = ncpu * steal / max(1, total)

    def ours_by_group(self) -> dict[str, float]:
        """Cores used per process group of the tree over the watched span."""
        out: dict[str, float] = {}
        for pid, (first, last) in self.cpu.items():
            # a Ray worker changes its title with its work: count it under its busiest one
            seen = self.titles[pid]
            busy = {k: v for k, v in seen.items() if k != "ray::IDLE"} or seen
            group = max(busy, key=lambda k: busy[k])
            out[group] = out.get(group, 0.0) + (last - first) / max(self.seconds, 1e-9)
        return out

    @property
    def ours_cores(self) -> float:
        return sum(self.ours_by_group().values())

    @property
    def others_cores(self) -> float:
        return max(0.0, self.busy_cores - self.ours_cores)


@dataclass
class Sample:
    arm: str
    round: int
    rate: float
    load1: float
    ours: float
    others: float
    steal: float
    groups: dict[str, float]

    @property
    def disturbed(self) -> bool:
        return self.others > BUSY_OTHERS


Arm = Callable[[], float]


def run_interleaved(
    arms: dict[str, Arm], rounds: int, verbose: bool = True, deadline: float | None = None
) -> list[Sample]:
    """Each round runs every arm once (returning its rate), the order rotated by one per round.
    `deadline` (a `time.perf_counter()` value): no round starts that would, at the pace of the
    rounds so far, end after it (the first round always runs)."""
    names = list(arms)
    samples: list[Sample] = []
    nice_seen: dict[str, set[int]] = {}
    t0 = time.perf_counter()
    for r in range(rounds):
        if (
            deadline is not None
            and r
            and time.perf_counter() + (time.perf_counter() - t0) / r > deadline
        ):
            print(f"  stopping after {r} round(s): the time budget is spent", flush=True)
            break
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            load1 = os.getloadavg()[0]
            with Watch() as watch:
                rate = arms[name]()
            s = Sample(
                name,
                r,
                rate,
                load1,
                watch.ours_cores,
                watch.others_cores,
                watch.steal_cores,
                watch.ours_by_group(),
            )
            for k, v in watch.nice.items():
                nice_seen.setdefault(k, set()).update(v)
            samples.append(s)
            if verbose:
                print(
                    f"  round {r + 1}/{rounds} {name:<34} {rate:8.2f}/s  load1 {load1:5.2f}  "
                    f"ours {s.ours:4.2f} others {s.others:4.2f} steal {s.steal:4.2f} cores"
                    + ("  *" if s.disturbed else ""),
                    flush=True,
                )
    run_interleaved.nice_seen = nice_seen  # type: ignore[attr-defined]
    return samples


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": med, "min": a.min(), "max": a.max(), "q1": q1, "q3": q3, "n": len(a)}


def summarise(samples: list[Sample]) -> dict[str, dict[str, float]]:
    arms: dict[str, list[Sample]] = {}
    for s in samples:
        arms.setdefault(s.arm, []).append(s)
    out = {}
    for arm, ss in arms.items():
        st = stats([s.rate for s in ss])
        st["ours"] = float(np.median([s.ours for s in ss]))
        # per CPU-second this benchmark got: robust to how much of the machine others left
        st["per_cpu"] = float(np.median([s.rate / max(s.ours, 1e-3) for s in ss]))
        st["others"] = float(np.median([s.others for s in ss]))
        st["disturbed"] = sum(s.disturbed for s in ss)
        out[arm] = st
    return out


def round_ratios(samples: list[Sample], num: str, den: str) -> list[float]:
    """num / den within each round (the two arms ran minutes apart at most)."""
    by = {(s.arm, s.round): s.rate for s in samples}
    rounds = sorted({s.round for s in samples})
    return [by[(num, r)] / by[(den, r)] for r in rounds if (num, r) in by and (den, r) in by]


def print_report(
    title: str,
    samples: list[Sample],
    ratios: list[tuple[str, str, str]],
    load_before: str,
    load_after: str,
    unit: str = "images/s",
) -> dict[str, dict[str, float]]:
    """Per-arm medians and spread, ratios of medians (with the per-round spread), loads, nice."""
    summary = summarise(samples)
    print(f"\n{title}")
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"load average (1/5/15 min) before {load_before}, after {load_after}")
    print(
        f"\n  {'arm':<36}{unit + ' median':>16}{'min-max':>16}{'IQR':>16}"
        f"{'ours':>7}{'others':>8}{'disturbed':>11}{'per CPU-s':>11}"
    )
    for arm, st in summary.items():
        print(
            f"  {arm:<36}{st['median']:>16.2f}{st['min']:>8.2f}-{st['max']:<7.2f}"
            f"{st['q1']:>8.2f}-{st['q3']:<7.2f}{st['ours']:>7.2f}{st['others']:>8.2f}"
            f"{int(st['disturbed']):>6}/{int(st['n'])}{st['per_cpu']:>11.2f}"
        )
    print(
        "  ('ours': cores used by this benchmark's process tree, 'others': by every other process "
        f"of the machine, medians; 'disturbed': rounds where others used > {BUSY_OTHERS} cores; "
        "'per CPU-s': rate / our cores, per round, median: work per CPU-second we got)"
    )
    for label, num, den in ratios:
        if num not in summary or den not in summary:
            continue
        rr = round_ratios(samples, num, den)
        spread = f"per round {min(rr):.2f}-{max(rr):.2f}, median {np.median(rr):.2f}" if rr else ""
        print(f"  {label:<52} {summary[num]['median'] / summary[den]['median']:.2f}  ({spread})")
    nice = getattr(run_interleaved, "nice_seen", {})
    if nice:
        print(
            "  nice levels seen: " + "; ".join(f"{k} {sorted(v)}" for k, v in sorted(nice.items()))
        )
    return summary


def print_cpu_breakdown(samples: list[Sample], arm: str, top: int = 8) -> None:
    """Median cores per process group of this tree during `arm`: where the CPU went."""
    ss = [s for s in samples if s.arm == arm]
    if not ss:
        return
    groups = sorted({g for s in ss for g in s.groups})
    med = {g: float(np.median([s.groups.get(g, 0.0) for s in ss])) for g in groups}
    items = sorted(med.items(), key=lambda kv: -kv[1])[:top]
    print(
        f"  cores by process during '{arm}' (median): "
        + ", ".join(f"{k} {v:.2f}" for k, v in items)
    )


def copies(files: list[Path], folder: Path, n: int) -> list[Path]:
    """`n` links to each IMAJ-named file under distinct names (a digit appended to the uid), in
    `n` rounds over `files`: distinct ids, same content (the embed job decodes every copy)."""
    if not 1 <= n <= 1000:
        raise ValueError("copies: 1 to 1000")
    width = len(str(n - 1))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        for f in files:
            parts = f.name.split("_")
            parts[2] += f"{k:0{width}d}"
            link = folder / "_".join(parts)
            if not link.exists():
                link.symlink_to(f)
            out.append(link)
    return out


def steady_rate_from_parts(directory: Path) -> float:
    """Steady-state rate of an embed run from the Parquet parts it wrote: rows after the first
    part over the time from the first part's write to the last's (file modification times), so
    start-up (Ray Data planning, actor start, model load) is left out."""
    import pyarrow.parquet as pq

    parts = sorted(
        (p.stat().st_mtime_ns, pq.ParquetFile(p).metadata.num_rows)
        for p in directory.rglob("part-*.parquet")
    )
    if len(parts) < 3:
        raise RuntimeError(f"only {len(parts)} parts: use more images or smaller rows_per_file")
    rows = sum(n for _, n in parts[1:])
    return rows / ((parts[-1][0] - parts[0][0]) / 1e9)
