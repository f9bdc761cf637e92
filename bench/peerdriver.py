"""The client side of `bench.peers`, run by each system's own venv python.

    python -m bench.peerdriver SYSTEM MODE N     (env PEERS_REDIS_URL)

MODE: `single` (N enqueues, one call a job), `bulk` (N jobs through the system's bulk
call, if it has one), `fill` (N jobs, bulk if possible), `probes` (one warm-up probe,
then N probes, each sent when the previous one has run: enqueue-to-start latency on an
idle worker). Prints one JSON line. stdlib, redis-py and the system's library only.
"""

from __future__ import annotations

import importlib
import json
import sys
import time

from bench.peerapps import common

PROBE_WAIT_S = 30.0  # a probe that has not run by then fails the measurement
PROBE_GAP_S = 0.005  # idle time between a probe's completion and the next send


def main(argv: list[str]) -> int:
    system, mode, n = argv[0], argv[1], int(argv[2])
    app = importlib.import_module(f"bench.peerapps.{system}_app")
    app.setup()
    out: dict[str, object] = {}
    if mode == "single":
        loop = getattr(app, "enqueue_single_loop", None)
        t = time.perf_counter()
        if loop is not None:
            loop(n)
        else:
            for _ in range(n):
                app.enqueue_one()
        out["seconds"] = time.perf_counter() - t
    elif mode in ("bulk", "fill"):
        t = time.perf_counter()
        ok = app.enqueue_bulk(n)
        if not ok and mode == "fill":
            for _ in range(n):
                app.enqueue_one()
            ok = True
        out["seconds"] = time.perf_counter() - t if ok else None
    elif mode == "probes":
        import redis

        r = redis.Redis.from_url(common.URL, socket_timeout=PROBE_WAIT_S + 5)
        lat: list[float] = []
        for i in range(n + 1):
            app.enqueue_probe(time.time_ns())
            if r.blpop(common.DONE, timeout=PROBE_WAIT_S) is None:
                raise SystemExit(f"{system}: probe {i} did not run within {PROBE_WAIT_S} s")
            time.sleep(PROBE_GAP_S)
        raw = [int(x) for x in r.lrange(common.LAT, 0, -1)]
        lat = [x / 1e6 for x in raw[1:]]  # the first probe is the warm-up
        out["latencies_ms"] = lat
    else:
        raise SystemExit(f"unknown mode {mode!r}: single, bulk, fill or probes")
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
