"""`make bench-peers`: podjobs side by side with Huey, Dramatiq, RQ, Celery and arq.

    python -m bench.peers [--n 10000] [--drain-timeout 30] [--probes 200] [--max-minutes 40]

1. Venvs: each peer in a venv of its own under var/peers/<name>, pinned (PEERS below),
   created by pip on the first run (a marker file holds the pins; a change re-creates it).
2. One private redis-server on a free port (never 6379), started and stopped by pid;
   every measurement starts from FLUSHALL. `redis-benchmark` on it is the ceiling.
3. The same job bodies (bench/peerapps/common.py: one INCR as completion counter, the
   first and last job stamp their times; a probe job records enqueue-to-start). Each
   system's client runs in its own venv (bench/peerdriver.py); each worker at its defaults.
4. Interleaved: podjobs, peer 1, podjobs, peer 2, ..., podjobs. A peer's figure is paired
   with the mean of the podjobs runs either side of it, so load on the machine falls on
   both alike; each column reports podjobs' advantage over the best peer (> 1 = ahead).
5. Bounded: N in [100, 100,000]; a drain stops at --drain-timeout (its figure then counts
   the jobs done, marked `*`); the whole run stops starting measurements after
   --max-minutes; every worker runs in its own session and its process group is killed
   by pid after its measurement and again at exit (even on error or SIGTERM).

Prints the table and writes bench/results/peers.json.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEER_DIR = REPO / "var" / "peers"
RESULTS = REPO / "bench" / "results"

# Pinned peers (the library and the redis-py it pulls are recorded in the JSON).
PEERS: dict[str, list[str]] = {
    "huey": ["huey==3.5.4", "redis==8.1.0"],
    "dramatiq": ["dramatiq[redis]==2.2.1"],
    "rq": ["rq==3.0.0"],
    "celery": ["celery[redis]==5.7.0"],
    "arq": ["arq==0.28.0"],
}
LIBS = ("podjobs", *PEERS)
N_BOUNDS = (100, 100_000)
WORKER_READY_S = 60.0  # a worker that has run nothing by then fails its measurement
CLIENT_TIMEOUT_S = 300.0  # one enqueue run or probe run


@dataclass(frozen=True)
class Variant:
    """One way to run a system's worker: its library, and its command at defaults."""

    name: str
    lib: str
    argv: Callable[[str], list[str]]
    isolated: bool = False  # each job runs in a process other than the one that fetched it
    #: one command at its defaults starts a worker process per core (Dramatiq's --processes,
    #: Celery prefork's --concurrency): it uses the whole machine by itself
    per_core: bool = False


def _venv_bin(lib: str, exe: str) -> str:
    return str(PEER_DIR / lib / "bin" / exe)


#: --baseline TREE: another checkout of podjobs (installed into var/peers/podjobs-base),
#: measured beside this one as the pseudo-peer "podjobs-base": a before/after A/B
BASELINE: list[Path] = []
BASE = "podjobs-base"


def _python(lib: str) -> str:
    return _venv_bin(lib, "python")


def _app(lib: str) -> str:
    """The bench/peerapps module a library's client and worker use."""
    return "podjobs" if lib == BASE else lib


def _podjobs(extra: list[str], lib: str = "podjobs") -> Callable[[str], list[str]]:
    # the console script, as a user starts a worker and as every peer is started here
    return lambda url: [_venv_bin(lib, "podjobs"), "worker", "--redis", url,
                        "--app", "bench.peerapps.podjobs_app", "--queues", "peers",
                        "--log-level", "warning", *extra]


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("podjobs", "podjobs", _podjobs([])),
    Variant("podjobs-process", "podjobs", _podjobs(["--isolation", "process"]), isolated=True),
    Variant(BASE, BASE, _podjobs([], BASE)),
    Variant(f"{BASE}-process", BASE, _podjobs(["--isolation", "process"], BASE), isolated=True),
    Variant("huey", "huey", lambda url: [_venv_bin("huey", "huey_consumer"), "bench.peerapps.huey_app.huey"]),
    Variant("dramatiq", "dramatiq", lambda url: [_venv_bin("dramatiq", "dramatiq"), "bench.peerapps.dramatiq_app"],
            per_core=True),
    Variant("rq-simple", "rq", lambda url: [_venv_bin("rq", "rq"), "worker", "-u", url,
                                            "-w", "rq.worker.SimpleWorker", "peers"]),
    Variant("rq-fork", "rq", lambda url: [_venv_bin("rq", "rq"), "worker", "-u", url, "peers"], isolated=True),
    Variant("celery-threads", "celery", lambda url: [_venv_bin("celery", "celery"), "-A", "bench.peerapps.celery_app",
                                                     "worker", "--pool", "threads"]),
    Variant("celery-prefork", "celery", lambda url: [_venv_bin("celery", "celery"), "-A", "bench.peerapps.celery_app",
                                                     "worker", "--pool", "prefork"], isolated=True,
            per_core=True),
    Variant("arq", "arq", lambda url: [_venv_bin("arq", "arq"), "bench.peerapps.arq_app.WorkerSettings"]),
)}
PEER_VARIANTS = [v for v in VARIANTS if VARIANTS[v].lib not in ("podjobs", BASE)]

# column key -> (label, higher is better, unit format)
COLUMNS: dict[str, tuple[str, bool, str]] = {
    "enqueue_single_per_s": ("enqueue, one call a job (/s)", True, "{:,.0f}"),
    "enqueue_bulk_per_s": ("bulk enqueue (/s)", True, "{:,.0f}"),
    "drain_start_per_s": ("drain from worker start, 1 command (/s)", True, "{:,.0f}"),
    "drain_steady_per_s": ("drain steady after the first job, 1 command (/s)", True, "{:,.0f}"),
    "drain_machine_per_s": ("drain steady, a process per core (/s)", True, "{:,.0f}"),
    "two_vs_one": ("2 commands vs 1 (steady drain ratio)", True, "{:.2f}"),
    "first_job_s": ("first job after worker start (s)", False, "{:.2f}"),
    "latency_p50_ms": ("latency enqueue -> start p50 (ms)", False, "{:.2f}"),
    "latency_p99_ms": ("latency enqueue -> start p99 (ms)", False, "{:.2f}"),
    "isolated_p99_ms": ("process isolation: latency p99 (ms)", False, "{:.1f}"),
    "redis_bytes_per_job": ("Redis memory per queued job (bytes)", False, "{:,.0f}"),
    "worker_cpu_us_per_job": ("worker CPU per job, 1 command (us)", False, "{:,.0f}"),
    "worker_cpu_us_per_job_2": ("worker CPU per job, 2 commands (us)", False, "{:,.0f}"),
    "redis_cpu_us_per_job": ("Redis CPU per job, 1 command (us)", False, "{:,.1f}"),
}


# ---------------------------------------------------------------------------- pure maths


def advantage(podjobs: float, peer: float, higher_is_better: bool) -> float:
    """How far podjobs is ahead of a peer on one column (> 1 = ahead, < 1 = behind)."""
    if higher_is_better:
        return podjobs / peer
    return peer / podjobs


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in (0, 100]) of a non-empty sequence."""
    s = sorted(values)
    rank = max(1, -(-len(s) * q // 100))  # ceil(len * q / 100)
    return float(s[int(rank) - 1])


def paired_ratios(sequence: Sequence[tuple[str, float | None]], higher_is_better: bool) -> dict[str, float]:
    """Each peer's figure against the podjobs runs measured nearest to it.

    `sequence` is the measurement order, ("podjobs", x) alternating with (peer, y); a
    peer's pair is the median of the podjobs runs up to two places either side of it (the
    runs right before and after it, and the ones before and after those), so one podjobs
    run caught by a load spike does not decide a ratio. Missing figures (None) pair with
    nothing. Returns peer -> advantage of podjobs.
    """
    out: dict[str, float] = {}
    for i, (name, value) in enumerate(sequence):
        if name == "podjobs" or value is None:
            continue
        near = [v for j in (i - 3, i - 1, i + 1, i + 3) if 0 <= j < len(sequence)
                for n, v in [sequence[j]] if n == "podjobs" and v is not None]
        if near:
            out[name] = advantage(statistics.median(near), value, higher_is_better)
    return out


def machine_drain(result: dict[str, Any], per_core: bool, cores: int | None = None) -> float | None:
    """Steady drain with a worker process per core: one command of a system that starts one
    per core by itself (`per_core`), else two commands, which is one per core only on a
    2-core machine (`workers` measures one and two commands); None elsewhere."""
    if per_core:
        return result.get("drain_steady_per_s")
    return result.get("drain_steady_2_per_s") if (cores or os.cpu_count()) == 2 else None


def best_peer(ratios: dict[str, float]) -> tuple[str, float] | None:
    """The peer podjobs is least ahead of (the smallest advantage), or None."""
    if not ratios:
        return None
    name = min(ratios, key=lambda k: ratios[k])
    return name, ratios[name]


# ---------------------------------------------------------------------------- processes


_live: list[subprocess.Popen[bytes]] = []


def _kill_group(p: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM the worker's process group (its leader's pid), then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            break
        try:
            p.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; children of a pool may linger in the group a moment
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break
    if p in _live:
        _live.remove(p)


def _kill_all() -> None:
    for p in list(_live):
        _kill_group(p, grace=0.5)


_TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgids: Sequence[int]) -> float:
    """CPU seconds (user + sys, with reaped children's) of every process in these groups."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:  # fields[0] is the state: pgrp is field 5 of stat
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / _TICK


def _on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _env(url: str, n: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=str(REPO), PEERS_REDIS_URL=url, PEERS_N=str(n), PYTHONUNBUFFERED="1")
    return env


def start_worker(v: Variant, url: str, n: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        p = subprocess.Popen(v.argv(url), cwd=REPO, env=_env(url, n), stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    _live.append(p)
    return p


def client(lib: str, mode: str, n: int, url: str) -> dict[str, Any]:
    out = subprocess.run([_python(lib), "-m", "bench.peerdriver", _app(lib), mode, str(n)], cwd=REPO,
                         env=_env(url, n), capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
    if out.returncode != 0:
        raise RuntimeError(f"{lib} {mode}: exit {out.returncode}: {out.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def install_podjobs(lib: str, tree: Path, redis_py: str | None = None) -> str:
    """podjobs from `tree` installed into var/peers/<lib> the way a user installs it (a
    wheel, not the editable checkout of `make venv`, whose import hook slows every import
    of a fresh process), like each peer in its own venv; the code is installed again on
    every run, so the figures are the tree's as it is now."""
    d = PEER_DIR / lib
    fresh = not (d / "bin" / "python").exists()
    if fresh:
        print(f"bench-peers: creating {d} (podjobs from {tree}) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(d)], check=True, timeout=120)
        subprocess.run([str(d / "bin" / "pip"), "install", "-q", str(tree)], check=True, timeout=900)
    if redis_py:
        subprocess.run([str(d / "bin" / "pip"), "install", "-q", f"redis[hiredis]=={redis_py}"],
                       check=True, timeout=900, capture_output=True)
    if not fresh:
        subprocess.run([str(d / "bin" / "pip"), "install", "-q", "--no-deps", "--force-reinstall", str(tree)],
                       check=True, timeout=900, capture_output=True)
    return (f"podjobs ({tree}, {_git_head(tree)}, installed in {d}"
            + (f", redis-py {redis_py}" if redis_py else "") + ")")


def ensure_venvs() -> dict[str, str]:
    """Create each peer's venv (pinned) unless its marker already holds the same pins."""
    versions: dict[str, str] = {}
    for lib, reqs in PEERS.items():
        d = PEER_DIR / lib
        marker = d / ".pinned"
        if not (marker.exists() and marker.read_text() == "\n".join(reqs)):
            print(f"bench-peers: creating {d} ({' '.join(reqs)}) ...", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(d)], check=True, timeout=120)
            subprocess.run([str(d / "bin" / "pip"), "install", "-q", *reqs], check=True, timeout=900)
            marker.write_text("\n".join(reqs))
        freeze = subprocess.run([str(d / "bin" / "pip"), "freeze"], capture_output=True, text=True,
                                check=True, timeout=120).stdout.split()
        versions[lib] = " ".join(x for x in freeze if x.split("==")[0].lower() in (lib, "redis"))
    return versions


# ---------------------------------------------------------------------------- measurements


@dataclass
class Bench:
    url: str
    port: int
    n: int
    drain_timeout: float
    probes: int
    logs: Path
    deadline: float
    notes: list[str] = field(default_factory=list)

    def r(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def flush(self) -> None:
        self.r().flushall()

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def clients(self, lib: str) -> dict[str, float | None]:
        """Single enqueue, then bulk; Redis memory per queued job from each.

        The memory column takes the bulk run where the library has one (podjobs' one-call
        enqueue also leaves a 30 s request marker per call, which expires; the JSON keeps
        both figures).
        """
        r = self.r()
        res: dict[str, float | None] = {}
        for mode in ("single", "bulk"):
            self.flush()
            before = int(r.info("memory")["used_memory"])
            seconds = client(lib, mode, self.n, self.url)["seconds"]
            after = int(r.info("memory")["used_memory"])
            res[f"enqueue_{mode}_per_s"] = None if seconds is None else self.n / seconds
            res[f"redis_bytes_per_job_{mode}"] = None if seconds is None else (after - before) / self.n
        self.flush()
        res["redis_bytes_per_job"] = res["redis_bytes_per_job_bulk"] or res["redis_bytes_per_job_single"]
        return res

    def drain(self, v: Variant, processes: int) -> dict[str, Any]:
        """N queued jobs, then `processes` workers started: first job, from start, steady."""
        r = self.r()
        self.flush()
        client(v.lib, "fill", self.n, self.url)
        procs: list[subprocess.Popen[bytes]] = []
        t0 = time.time()
        try:
            for k in range(processes):
                procs.append(start_worker(v, self.url, self.n, self._log(f"{v.name}-drain{processes}-{k}")))
            limit = t0 + self.drain_timeout
            pgids = [p.pid for p in procs]
            at_first: tuple[int, float, float] | None = None  # (count, worker CPU, Redis CPU)
            while r.get("peers:last") is None and time.time() < limit:
                if all(p.poll() is not None for p in procs):
                    raise RuntimeError(f"{v.name}: worker exited ({self._log(v.name)}-*)")
                if at_first is None and r.exists("peers:first"):
                    at_first = (int(r.get("peers:count") or 0), group_cpu_s(pgids), self.redis_cpu_s())
                time.sleep(0.05)
            now = time.time()
            cpu_end, redis_end = group_cpu_s(pgids), self.redis_cpu_s()
            last_raw, first_raw, count = r.mget("peers:last", "peers:first", "peers:count")
        finally:
            for p in procs:
                _kill_group(p)
        done = int(count or 0)
        if first_raw is None:
            return {"partial": True, "drain_start_per_s": 0.0, "drain_steady_per_s": 0.0,
                    "first_job_s": None, "done": 0}
        first = float(first_raw)
        end = float(last_raw) if last_raw is not None else now
        partial = last_raw is None
        cpu: dict[str, float] = {}
        if at_first is not None and done > at_first[0]:
            jobs = done - at_first[0]
            cpu = {"worker_cpu_us_per_job": (cpu_end - at_first[1]) / jobs * 1e6,
                   "redis_cpu_us_per_job": (redis_end - at_first[2]) / jobs * 1e6}
        return {"partial": partial, "done": done, "first_job_s": first - t0, **cpu,
                "drain_start_per_s": done / (end - t0),
                "drain_steady_per_s": (done - 1) / (end - first) if end > first else 0.0}

    def redis_cpu_s(self) -> float:
        info = self.r().info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def latency(self, v: Variant) -> dict[str, float]:
        self.flush()
        p = start_worker(v, self.url, self.n, self._log(f"{v.name}-latency"))
        try:
            lat = client(v.lib, "probes", self.probes, self.url)["latencies_ms"]
        finally:
            _kill_group(p)
        return {"latency_p50_ms": statistics.median(lat), "latency_p99_ms": percentile(lat, 99),
                "latency_max_ms": max(lat)}

    def workers(self, v: Variant) -> dict[str, Any]:
        one = self.drain(v, 1)
        two = self.drain(v, 2)
        lat = self.latency(v)
        res = {k: one.get(k) for k in ("drain_start_per_s", "drain_steady_per_s", "first_job_s",
                                      "worker_cpu_us_per_job", "redis_cpu_us_per_job")}
        res["worker_cpu_us_per_job_2"] = two.get("worker_cpu_us_per_job")
        res["partial"] = one["partial"] or two["partial"]
        res["drain_steady_2_per_s"] = two["drain_steady_per_s"]
        res["two_vs_one"] = (two["drain_steady_per_s"] / one["drain_steady_per_s"]
                             if one["drain_steady_per_s"] else None)
        res["drain_machine_per_s"] = machine_drain(res, v.per_core)
        res.update(lat)
        if v.isolated:
            res["isolated_p99_ms"] = lat["latency_p99_ms"]
        return res

    def podjobs_workers(self, lib: str = "podjobs") -> dict[str, Any]:
        res = self.workers(VARIANTS[lib])
        iso = self.latency(VARIANTS[f"{lib}-process"])
        res["isolated_p99_ms"] = iso["latency_p99_ms"]
        res["isolated_p50_ms"] = iso["latency_p50_ms"]
        return res

    def ceiling(self) -> dict[str, float]:
        res: dict[str, float] = {}
        for label, extra in (("50 clients", []), ("1 client", ["-c", "1"])):
            out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(self.port), "-t",
                                  "incr,lpush,rpop", "-n", "100000", "-q", *extra],
                                 capture_output=True, text=True, timeout=180).stdout
            for line in out.replace("\r", "\n").splitlines():
                if "requests per second" in line:
                    name, rest = line.split(":", 1)
                    res[f"redis-benchmark {name.strip()} ({label})"] = float(rest.split()[0])
        r = self.r()
        t = time.perf_counter()
        for _ in range(self.n):
            r.incr("peers:ceiling")
        res["redis-py INCR, one call at a time, 1 process"] = self.n / (time.perf_counter() - t)
        self.flush()
        return res


def interleave(units: Sequence[str], run_podjobs: Callable[[], dict[str, Any]],
               run_peer: Callable[[str], dict[str, Any]], b: Bench) -> list[tuple[str, dict[str, Any] | None]]:
    """podjobs, unit 1, podjobs, unit 2, ..., podjobs; a failed or skipped run is None."""
    seq: list[tuple[str, dict[str, Any] | None]] = []

    def one(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if time.monotonic() > b.deadline:
            b.notes.append(f"{name}: skipped (--max-minutes reached)")
            seq.append((name, None))
            return
        print(f"bench-peers: {name} ...", file=sys.stderr, flush=True)
        try:
            seq.append((name, fn()))
        except Exception as exc:  # noqa: BLE001 - one system's failure is a note in the table
            b.notes.append(f"{name}: {str(exc)[-300:]} (logs: {b.logs})")
            print(f"bench-peers: {name} failed: {exc}", file=sys.stderr, flush=True)
            seq.append((name, None))

    one("podjobs", run_podjobs)
    for u in units:
        one(u, lambda u=u: run_peer(u))  # type: ignore[misc]
        one("podjobs", run_podjobs)
    return seq


# ---------------------------------------------------------------------------- report


def summarize(seqs: dict[str, list[tuple[str, dict[str, Any] | None]]]) -> dict[str, Any]:
    """Per column: podjobs' median, each peer's figure, paired advantage, best peer."""
    cols: dict[str, Any] = {}
    for key, (_label, higher, _fmt) in COLUMNS.items():
        for seq in seqs.values():
            pairs = [(n, None if r is None else r.get(key)) for n, r in seq]
            if not any(n != "podjobs" and v is not None for n, v in pairs):
                continue
            pj = [v for n, v in pairs if n == "podjobs" and v is not None]
            ratios = paired_ratios(pairs, higher)
            best = best_peer({k: v for k, v in ratios.items() if k != BASE})
            cols[key] = {"podjobs_median": statistics.median(pj) if pj else None,
                         "podjobs_runs": pj,
                         "peers": {n: v for n, v in pairs if n != "podjobs"},
                         "ratios": ratios,
                         "best_peer": best[0] if best else None,
                         "advantage": best[1] if best else None}
    return cols


def table(cols: dict[str, Any]) -> str:
    from podjobs.table import render

    names = ["huey", "dramatiq", "rq", "celery", "arq"] + ([BASE] if BASELINE else [])
    rows = []
    for key, (label, _higher, fmt) in COLUMNS.items():
        c = cols.get(key)
        if c is None:
            continue

        def cell(v: Any, fmt: str = fmt) -> str:
            return "-" if v is None else fmt.format(v)

        peers = c["peers"]
        row = [label, cell(c["podjobs_median"])]
        for lib in names:
            vals = [v for nm, v in peers.items() if (VARIANTS[nm].lib if nm in VARIANTS else nm) == lib]
            row.append(" / ".join(cell(v) for v in vals) if vals else "")
        row += [c["best_peer"] or "-", "-" if c["advantage"] is None else f"{c['advantage']:.2f}x"]
        if BASELINE:
            vs = c["ratios"].get(BASE)
            row.append("-" if vs is None else f"{vs:.2f}x")
        rows.append(row)
    return render(["column", "podjobs", "huey", "dramatiq", "rq (simple / fork)",
                   "celery (threads / prefork)", "arq"] + ([BASE] if BASELINE else [])
                  + ["best peer", "podjobs vs best"] + (["podjobs vs base"] if BASELINE else []), rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="jobs per enqueue and drain run (100-100,000)")
    ap.add_argument("--drain-timeout", type=float, default=30.0, help="seconds a drain may take (then partial)")
    ap.add_argument("--probes", type=int, default=200, help="latency probes on an idle worker (10-2,000)")
    ap.add_argument("--max-minutes", type=float, default=40.0, help="start no measurement after this")
    ap.add_argument("--only", default="", help="comma-separated peers to include (default: all)")
    ap.add_argument("--baseline", metavar="TREE", help="another podjobs checkout (installed into var/peers/podjobs-base), "
                    "measured interleaved as the pseudo-peer podjobs-base (a before/after A/B)")
    ap.add_argument("--baseline-redis-py", metavar="VERSION",
                    help="install the baseline (this tree when --baseline is not given) with this "
                         "redis-py, e.g. 5.3.1 (arq's): podjobs on the same client library as a peer")
    ap.add_argument("--render", metavar="JSON", help="print the table of a saved run (its JSON) "
                    "again, with the columns derived from its runs, and measure nothing")
    args = ap.parse_args(argv)
    if args.render:
        return render_saved(Path(args.render))
    if args.baseline or args.baseline_redis_py:
        BASELINE.append(Path(args.baseline or REPO).resolve())
    n = min(max(args.n, N_BOUNDS[0]), N_BOUNDS[1])
    probes = min(max(args.probes, 10), 2_000)
    only = [x for x in args.only.split(",") if x]

    from podjobs.infra.ports import free_port
    from podjobs.infra.servers import RedisServer

    signal.signal(signal.SIGTERM, _on_signal)
    atexit.register(_kill_all)
    versions = ensure_venvs()
    import podjobs

    versions["podjobs"] = install_podjobs("podjobs", REPO)
    if BASELINE:
        versions[BASE] = install_podjobs(BASE, BASELINE[0], args.baseline_redis_py)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="podjobs-peers-") as d:
        port = free_port()
        assert port != 6379, "never the default Redis port"
        server = RedisServer.in_dir(Path(d), port)
        server.start()
        try:
            server.wait_ready(10)
            logs = REPO / "var" / "peers-logs" / time.strftime("%Y%m%d-%H%M%S")
            logs.mkdir(parents=True)
            b = Bench(f"redis://127.0.0.1:{port}/0", port, n, args.drain_timeout, probes, logs,
                      time.monotonic() + args.max_minutes * 60)
            ceiling = b.ceiling()
            libs = [x for x in PEERS if not only or x in only] + ([BASE] if BASELINE else [])
            variants = [x for x in PEER_VARIANTS if not only or VARIANTS[x].lib in only]
            variants += [BASE] if BASELINE else []
            seqs = {
                "clients": interleave(libs, lambda: b.clients("podjobs"), b.clients, b),
                "workers": interleave(variants, b.podjobs_workers,
                                      lambda v: b.podjobs_workers(BASE) if v == BASE else b.workers(VARIANTS[v]), b),
            }
            ceiling.update({f"{k} (after)": v for k, v in b.ceiling().items() if "50 clients" in k})
        finally:
            _kill_all()
            server.stop()
    cols = summarize(seqs)
    print(table(cols))
    iso = [r["isolated_p99_ms"] / r["latency_p99_ms"] for nm, r in seqs["workers"]
           if nm == "podjobs" and r is not None and r.get("latency_p99_ms")]
    if iso:
        print(f"\npodjobs --isolation process p99 / thread p99 (same slot, median of {len(iso)}): "
              f"{statistics.median(iso):.2f}")
    print("\nceiling:")
    for k, v in ceiling.items():
        print(f"  {k}: {v:,.0f} /s")
    for note in b.notes:
        print(f"note: {note}")
    print(f"\n{started}; N = {n}, {probes} probes; " + "; ".join(versions.values()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "peers.json"
    out.write_text(json.dumps({"started": started, "n": n, "probes": probes, "versions": versions,
                               "python": sys.version.split()[0], "podjobs_version": getattr(podjobs, "__version__", ""),
                               "ceiling": ceiling, "columns": cols, "runs": seqs, "notes": b.notes},
                              indent=2, default=str))
    print(f"written: {out}")
    return 0


def render_saved(path: Path) -> int:
    """The table of a saved peers.json, derived columns recomputed from its runs (2 cores)."""
    saved = json.loads(path.read_text())
    seqs = saved["runs"]
    for name, res in seqs.get("workers", []):
        if res is not None:
            lib = name.removesuffix("-base") if name.startswith("podjobs") else name
            per_core = VARIANTS[lib].per_core if lib in VARIANTS else False
            res["drain_machine_per_s"] = machine_drain(res, per_core, cores=2)
    if any(n == BASE for n, _ in seqs.get("workers", [])):
        BASELINE.append(Path("."))
    print(table(summarize(seqs)))
    print(f"\n{saved['started']}; N = {saved['n']}, {saved['probes']} probes; "
          + "; ".join(saved["versions"].values()))
    return 0


def _git_head(tree: Path) -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=tree, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
