"""The worker process: fetcher, executor threads, acker, heartbeat, poller.

1. Registers (heartbeat) and reaps workers that are gone. Its id in Redis is an
   `Identity`: renewed (a new generation) whenever the worker finds it was reaped, so a
   job reserved before a reap never starts here (the executor threads check each job's
   owner, and ask Redis first when the last confirmed heartbeat is too old).
2. Starts the fetcher (reserve batches into a local inbox), `concurrency`
   executor threads (each running jobs inline, or through its own child process
   with `isolation="process"`), the acker, the heartbeat and the poller. With process
   isolation the fetcher starts once every child has imported the app (warm children
   before work arrives; podjobs.isolation).
3. Stops gracefully on SIGTERM/SIGINT: stop fetching, give unstarted jobs
   back, let running jobs finish for `shutdown_timeout` seconds, then stop the
   children of those still running (process isolation: SIGTERM, SIGKILL after
   `podjobs.signals.CHILD_STOP_GRACE_S`), give them back to their queues and
   unregister. `run()` ends the process at the latest `shutdown_timeout` (+
   CHILD_STOP_GRACE_S) + EXIT_MARGIN_S seconds after the signal, even when a job ignores
   ctx.stopping or the interpreter's exit hangs (a job's non-daemon thread).

Signals (`run()`; the table is in podjobs.signals and README.md "Signals"):
TERM, INT stop gracefully; TSTP, USR1 quiet the worker (no new jobs, the running
ones finish, it stays up until TERM); TTIN, QUIT dump every thread's stack and the
running jobs to the log; HUP, USR2, CONT are logged and change nothing; TTOU is
ignored. No signal but KILL ends a worker mid-job, and process-isolation children
ignore those sent to the whole process group: the worker decides.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from podjobs.acker import Acker
from podjobs.backend import Backend
from podjobs.chain import worker_chain
from podjobs.chain.timeouts import Timeouts
from podjobs.context import Context
from podjobs.executor import Executor
from podjobs.fetcher import WAIT, Fetcher, Reserved, Wait
from podjobs.heartbeat import Heartbeat, busy_json
from podjobs.identity import Identity
from podjobs.ids import new_id
from podjobs.invoke import JobTimeout, Outcome, invoke
from podjobs.jobs import JobDef
from podjobs.middleware import Middleware, perform_middleware
from podjobs.payload import inflight_field
from podjobs.poller import Poller
from podjobs.record import Record
from podjobs.settler import Settler
from podjobs.signals import CHILD_STOP_GRACE_S, EXIT_MARGIN_S, ExitGuard, SignalDispatch, dump
from podjobs.stops import StopSignals
from podjobs.watchdog import Watchdog

if TYPE_CHECKING:  # process isolation (multiprocessing, ctypes) loads only when it is used
    from podjobs.isolation import Child

log = logging.getLogger("podjobs.worker")

#: how long start() waits for Redis to answer the first reservation before it starts the
#: worker's other threads anyway
FIRST_RESERVE_WAIT_S = 0.5
#: how long the first job a worker reserves runs alone before the other executor threads
#: start (they start as soon as it ends): it warms the process (the app's lazily made
#: clients and pools, imports inside job code) without nine copies of that warm-up
#: competing with it for the GIL or opening nine connections at once
FIRST_JOB_ALONE_S = 0.05


class WorkerConfig(Record):
    """A worker's settings (`config._replace(pod=...)` for a changed copy).

    - queues: the queues it serves, in priority order; concurrency: executor threads (or
      child processes); isolation: "thread" (default) or "process".
    - shutdown_timeout: seconds running jobs get to finish after SIGTERM before they are given
      back; heartbeat_ttl: seconds without a heartbeat after which a worker's jobs are taken
      over; poll_interval: seconds between promotions of due scheduled jobs and retries
      (jittered).
    - batch: most jobs reserved per call; prefetch: extra jobs held in the local inbox beyond
      `concurrency`; idle_wait: seconds an idle fetcher blocks on the wake lists before
      checking for shutdown.
    - max_jobs_per_child, max_memory_mb: process isolation: recycle a child after this many
      jobs, kill one above this resident size (MiB); app_modules: the `--app` modules.
    - pod, shard_url: the pod this worker serves and that pod's database shard (jobs' ctx.db).
    - middleware: links a worker adds to the outside of its middleware chain (a pod worker's
      tenant check, podjobs.pods.tenantcheck); see podjobs.chain.worker_chain.
    - metrics_port: serve /metrics and /healthz on this port (0: any free port; None: not at
      all), on metrics_host; metrics_top_tenants: export the N busiest tenants' job counts (0:
      no tenant label at all).

    A plain slots class, not a NamedTuple (podjobs.record: defining a 20-field NamedTuple cost
    ~2.6M instructions of every worker's start).
    """

    __slots__ = ("queues", "concurrency", "isolation", "shutdown_timeout", "heartbeat_ttl",
                 "poll_interval", "batch", "prefetch", "idle_wait", "max_jobs_per_child",
                 "max_memory_mb", "app_modules", "pod", "shard_url", "middleware",
                 "metrics_port", "metrics_host", "metrics_top_tenants")

    def __init__(self, queues: Sequence[str] = ("default",), concurrency: int = 10,
                 isolation: str = "thread", shutdown_timeout: float = 25.0,
                 heartbeat_ttl: float = 20.0, poll_interval: float = 1.0, batch: int = 100,
                 prefetch: int | None = None, idle_wait: float = 1.0,
                 max_jobs_per_child: int = 1000, max_memory_mb: float | None = None,
                 app_modules: Sequence[str] = (), pod: str | None = None,
                 shard_url: str | None = None, middleware: Sequence[Middleware] = (),
                 metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                 metrics_top_tenants: int = 0) -> None:
        self.queues = queues
        self.concurrency = concurrency
        self.isolation = isolation
        self.shutdown_timeout = shutdown_timeout
        self.heartbeat_ttl = heartbeat_ttl
        self.poll_interval = poll_interval
        self.batch = batch
        self.prefetch = prefetch
        self.idle_wait = idle_wait
        self.max_jobs_per_child = max_jobs_per_child
        self.max_memory_mb = max_memory_mb
        self.app_modules = app_modules
        self.pod = pod
        self.shard_url = shard_url
        self.middleware = middleware
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.metrics_top_tenants = metrics_top_tenants


class Worker:
    def __init__(self, backend: Backend, config: WorkerConfig) -> None:
        if not config.queues:
            raise ValueError("a worker needs at least one queue")
        self.backend = backend
        self.config = config
        self.identity = Identity(f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}")
        self.started_at = time.time()
        self._running: dict[int, tuple[str, str, str, float]] = {}
        self.acker = Acker(backend)
        self.settler = Settler(backend, self.acker, lambda: self.identity.id)
        #: the middleware chain (made at start, so that links added before then count)
        self.chain: list[Middleware] = []
        #: thread isolation: the job-side hooks of each job definition (with its timeout)
        self._perform: dict[str, list[Middleware]] = {}
        prefetch = config.prefetch if config.prefetch is not None else config.concurrency
        self.heartbeat = Heartbeat(backend, self.identity, config.heartbeat_ttl, self._info)
        self.fetcher = Fetcher(backend, self.identity, config.queues,
                               capacity=config.concurrency + max(0, prefetch),
                               batch=config.batch, idle_wait_s=config.idle_wait,
                               on_reaped=self.heartbeat.on_reaped)
        self.poller = Poller(backend, config.queues, config.poll_interval)
        self.watchdog = Watchdog()
        self._threads: list[threading.Thread] = []
        #: set when the first job this worker ran ended (see FIRST_JOB_ALONE_S)
        self._first_done = threading.Event()
        self._stopping = False
        self._giveback: list[Reserved] = []
        self._giveback_lock = threading.Lock()
        self._stopped = threading.Event()
        #: set at the start of a graceful stop
        self.stopping = threading.Event()
        #: each running job's ctx.stopping: all on shutdown, or one tenant's on a move
        self.stops = StopSignals()
        #: process isolation: every executor slot's child
        self._children: list[Child] = []
        #: process isolation: executor slots whose child has not yet said ready (or died)
        self._warming = 0
        self._warm_cond = threading.Condition()
        self._quiet = False
        self._probe: Any = None

    @property
    def id(self) -> str:
        """The worker's current id in Redis (host:pid:token, then .2, .3 ... after reaps)."""
        return self.identity.id

    def _start_metrics(self, port: int) -> Middleware:
        """The metrics link and the probe server (prometheus-client loads only here)."""
        from prometheus_client.registry import CollectorRegistry

        from podjobs.chain.metrics import JobCollector, JobMetrics
        from podjobs.exposition import MetricsServer

        link = JobMetrics(self.config.metrics_top_tenants)
        registry = CollectorRegistry()
        registry.register(JobCollector(link, self.config.pod or "", lambda: len(self._running),
                                       self.config.concurrency))
        self._probe = MetricsServer(registry, self.health, self.config.metrics_host, port).start()
        return link

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics and /healthz are served on (None: not served)."""
        return self._probe.port if self._probe is not None else None

    def health(self) -> tuple[bool, str]:
        """Healthy while heartbeats reach Redis (the last confirmed one is younger than 0.9
        of the heartbeat TTL) and the worker is not stopping."""
        if self._stopping:
            return False, f"worker {self.id} is stopping"
        age = time.monotonic() - self.heartbeat.last_ok
        if self.heartbeat.stale():
            return False, (f"worker {self.id}: no heartbeat confirmed by Redis for {age:.1f} s "
                           f"(TTL {self.config.heartbeat_ttl:g} s)")
        return True, f"worker {self.id}: ok, last heartbeat {age:.1f} s ago, {len(self._running)} running"

    def _info(self) -> dict[str, str]:
        return {"host": socket.gethostname(), "pid": str(os.getpid()),
                "queues": ",".join(self.config.queues), "concurrency": str(self.config.concurrency),
                "isolation": self.config.isolation, "started": f"{self.started_at:.3f}",
                "pod": self.config.pod or "", "busy": busy_json(self._running)}

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        outer = list(self.config.middleware)
        if self.config.metrics_port is not None:
            outer.insert(0, self._start_metrics(self.config.metrics_port))
        self.chain = worker_chain(self.settler, self.acker, outer, self.config.pod)
        for m in self.chain:
            m.worker_start(self)
        self.heartbeat.register()
        # done with Redis on this thread: its connection goes to the fetcher, and the reap of
        # dead workers and the first promote run on the poller's thread (started below), so
        # the first reservation waits for neither
        self.backend.release_connection()
        if self.config.isolation == "process":
            # every child imports the app before the first reservation; the heartbeat beats
            # meanwhile (an app slower to import than the heartbeat TTL must not get the
            # worker reaped, nor its /healthz stale)
            self._warming = self.config.concurrency
            self.acker.start()
            self._start_exec_threads(0, self.config.concurrency)
            self.heartbeat.start()
            self.poller.start(first=self.heartbeat.reap)
            self._wait_children_warm()
            self.fetcher.start()
        else:
            # one executor thread, then fetching, then the rest once Redis has answered the
            # first reservation: the first job does not wait for a dozen thread start-ups
            # (they would compete with that round trip for the GIL and the cores);
            # register() wrote the first beat. The wait is bounded: a slow Redis holds
            # nothing back for long.
            self._start_exec_threads(0, 1)
            self.fetcher.start()
            self.fetcher.answered.wait(FIRST_RESERVE_WAIT_S)
            if self.fetcher.first_count:
                self._first_done.wait(FIRST_JOB_ALONE_S)
            self.acker.start()
            self._start_exec_threads(1, self.config.concurrency)
            self.heartbeat.start()
            self.poller.start(first=self.heartbeat.reap)
        log.info("worker %s started: queues=%s concurrency=%d isolation=%s", self.id,
                 ",".join(self.config.queues), self.config.concurrency, self.config.isolation)

    def _start_exec_threads(self, first: int, end: int) -> None:
        for i in range(first, end):
            t = threading.Thread(target=self._exec_loop, name=f"podjobs-exec-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _wait_children_warm(self) -> None:
        """Process isolation: reserve no job before every child has imported the app (or
        died, or START_TIMEOUT_S passed in its slot), so that no job of the first ones waits
        for a child's start-up or competes with ten of them for the CPU. Ends early on a
        stop signal."""
        with self._warm_cond:
            while self._warming > 0 and not self._stopped.is_set():
                self._warm_cond.wait(0.2)  # a stop signal sets _stopped without notifying

    def _child_warmed(self) -> None:
        with self._warm_cond:
            self._warming -= 1
            self._warm_cond.notify_all()

    def run(self) -> None:
        """Start, act on signals (see the module docstring) until SIGTERM/SIGINT, then stop
        gracefully; a stop that outlives its deadline ends the process (ExitGuard)."""
        SignalDispatch(self.id, on_stop=self._stopped.set, on_quiet=self.quiet,
                       on_dump=self.dump).install()
        self.start()
        self._stopped.wait()
        grace = CHILD_STOP_GRACE_S if self.config.isolation == "process" else 0.0
        guard = ExitGuard(self.id, self.config.shutdown_timeout + grace + EXIT_MARGIN_S)
        self.stop()
        guard.stop_done = True

    def request_stop(self) -> None:
        self._stopped.set()

    def quiet(self) -> None:
        """Stop fetching and give the jobs not started back; running jobs finish; the worker
        stays up (heartbeat, acks) until it is stopped."""
        if self._quiet or self._stopping:
            return
        self._quiet = True
        self.fetcher.stop()
        self.fetcher.join(self.config.idle_wait + 1)
        back = self.fetcher.drain_inbox()
        n = len(back)
        self._give_back(back)
        log.info("worker %s is quiet: gave %d jobs not started back; %d running finish",
                 self.id, n, len(self._running))

    def dump(self) -> None:
        """Every thread's stack and the running jobs, to the log."""
        children = {c.owner: (c.pid, c.job) for c in self._children if c.pid}
        log.warning("%s", dump(self.id, dict(self._running), children))

    def stop(self) -> None:
        """Graceful stop (see the module docstring)."""
        deadline = time.monotonic() + self.config.shutdown_timeout
        self._stopping = True
        self.stopping.set()
        self.stops.stop_all()
        self.fetcher.stop()
        self.fetcher.join(max(0.1, min(self.config.idle_wait + 1, deadline - time.monotonic())))
        self._give_back(self.fetcher.drain_inbox())
        for _ in self._threads:
            self.fetcher.inbox.put(None)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        still = [t for t in self._threads if t.is_alive()]
        # the jobs still running go back to their queues below: their children must be gone
        # first, or they would run twice at once (thread mode: the process exits right after)
        if self._children and _isolation().stop_children(self._children, CHILD_STOP_GRACE_S):
            for t in still:
                t.join(1.0)
        self.poller.stop()
        self.heartbeat.stop()
        self.acker.stop()
        self._give_back(self._giveback)
        self._give_back(self.fetcher.drain_inbox())
        n = self.backend.recover(self.id, self.config.queues, force=True)
        if still or n:
            log.warning("worker %s: %d jobs still running after %.1f s were given back to their queues",
                        self.id, n, self.config.shutdown_timeout)
        self.watchdog.stop()
        for m in reversed(self.chain):
            m.worker_stop(self)
        if self._probe is not None:
            self._probe.stop()
        log.info("worker %s stopped", self.id)

    def _give_back(self, items: list[Reserved]) -> None:
        """Unstarted jobs back to the front of their queues (those of an earlier generation
        went back when it was reaped: requeue finds them no longer in flight)."""
        groups: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
        for q, raw, owner in items:
            groups.setdefault((owner, q), []).append((inflight_field(raw), raw))
        for (owner, q), pairs in groups.items():
            self.backend.requeue(owner, q, pairs)
        items.clear()

    # -- executor threads -----------------------------------------------------------

    def _exec_loop(self) -> None:
        child = None
        #: ChildStopped under process isolation; nothing else raises it
        child_stopped: tuple[type[BaseException], ...] = ()
        if self.config.isolation == "process":
            try:
                isolation = _isolation()
                child_stopped = (isolation.ChildStopped,)
                child = isolation.Child(self.config.app_modules, self.config.max_jobs_per_child,
                                        self.config.max_memory_mb, self.stopping)
                self._children.append(child)
                child.warm()  # imports the app now, not on the first job
                child.wait_ready(self.stopping)
            finally:
                self._child_warmed()  # start() reserves no job before every slot is here
        runner = child.run if child is not None else self._run_inline
        cfg = self.config
        ex = Executor(self.settler, self.chain, runner=runner, pod=cfg.pod,
                      shard_url=cfg.shard_url, stops=self.stops,
                      interrupt=child.interrupt if child is not None else None,
                      may_start=self._may_start)
        inbox_get = self.fetcher.inbox.get
        take_wait = self.fetcher.take_wait
        reclaim = self.fetcher.reclaim
        running = self._running
        me = threading.get_ident()
        stopping = self.stopping
        first_done = self._first_done
        try:
            while True:
                if child is not None and not child.ready:
                    child.wait_ready(stopping)  # take no job while the child imports the app
                got = WAIT if reclaim(me) else inbox_get()
                if got is None:
                    return
                if isinstance(got, Wait):  # idle: wait for work here and run the first job
                    first = take_wait()
                    if not first:
                        continue
                    item = first[0]
                else:
                    item = got
                if not self._stopping and not self._startable(item):
                    self.fetcher.done_one()
                    continue
                if self._stopping:
                    with self._giveback_lock:
                        self._giveback.append(item)
                    self.fetcher.done_one()
                    continue
                queue, raw, owner = item
                running[me] = (inflight_field(raw), "", queue, time.time())
                try:
                    ex.execute(queue, raw, owner)
                except child_stopped:
                    pass  # stopped at the shutdown deadline: stop() gives the job back
                except (Exception, JobTimeout) as exc:
                    ex.unsettled(queue, raw, owner, exc)
                finally:
                    running.pop(me, None)
                    self.fetcher.done_one()
                    if not first_done.is_set():
                        first_done.set()
        finally:
            if child is not None:
                child.close()

    def _may_start(self, owner: str) -> bool:
        """The executor's last check, right before a job reserved by `owner` runs: not when
        that generation of this worker was reaped since (the job went back to its queue and
        may run elsewhere). When the last confirmed heartbeat is too old to vouch for that (a
        pause), Redis is asked first; an error asking is not a reap (heartbeat.confirm waits
        for an answer). Stopping without an answer: not started, and stop() gives it back."""
        if self.heartbeat.stale() and not self.heartbeat.confirm(self.stopping):
            return False
        return owner == self.identity.id

    def _startable(self, item: Reserved) -> bool:
        """A cheap first look before a job is decoded (no Redis): reserved by a generation
        that is no longer current means reaped (see _may_start for the last check)."""
        if item.owner == self.identity.id:
            return True
        log.warning("job %s from %s not started: it was reserved by %s, which was reaped "
                    "(the job went back to its queue)", inflight_field(item.raw), item.queue,
                    item.owner)
        return False

    def _run_inline(self, jd: JobDef, ctx: Context, args: list[Any], kwargs: dict[str, Any]) -> Outcome:
        self._running[threading.get_ident()] = (ctx.job_id, jd.name, ctx.queue, time.time())
        mws = self._perform.get(jd.name)
        if mws is None:
            mws = list(perform_middleware())
            if jd.options.timeout:
                mws.append(Timeouts(self.watchdog, jd.options.timeout))  # innermost
            self._perform[jd.name] = mws
        return invoke(jd, ctx, args, kwargs, mws)


def _isolation() -> Any:
    """podjobs.isolation, imported on first use (a thread-mode worker never loads it)."""
    import podjobs.isolation

    return podjobs.isolation

