"""The one Redis gateway: every package (core, iteration, pods, scheduler, surface) talks
to a pod's Redis through it, never through redis-py directly.

1. `script(name)` is the one Lua loader: it reads `lua/<name>.lua` once per process and
   expands its include lines. A line `--! include clock` is replaced by the text of
   `lua/include/clock.lua` (each include at most once per script; includes may include
   others), so the shared pieces (the Redis clock, the status-record write, the
   iteration run fence) exist once. The expanded text is still one script: one EVALSHA,
   one round trip, atomic. A missing include or an unknown `--!` line is a
   `ScriptError` naming the file and line.
2. `Gateway(url)` holds the pod's two connection pools: `redis` (redis-py's retries on
   connection errors, for reads) and the scripts' own pool without them (see `run`).
   Scripts go over one connection per thread taken from that pool and kept (`_direct`):
   redis-py's pool checkout, command dispatch and release cost about 45 us of CPU a call
   here, more than the script itself; the connection's own health check (PING after 30 s
   idle), reconnect on the next call after an error, and fork check (a new connection in a
   child) stay.
   A `redis+sentinel://HOST:PORT,HOST:PORT/SERVICE?db=N` URL names a Sentinel-managed
   primary (`sentinel_url`): both pools are redis-py Sentinel pools whose connections ask
   the sentinels for the primary on every connect (`_FollowingConnection`), so after a
   failover the next attempt reaches the new primary (a demoted primary's READONLY reply
   drops the connection: the write was refused there, so `never_sent`); a script
   connection that failed is given back and the next call takes another (`_using`).
3. `run(name, what, keys, args, repeatable)` sends one script (loading it on NOSCRIPT).
   After a dropped connection it is sent again (up to SCRIPT_ATTEMPTS) when it never got
   through, or when it is `repeatable` (safe to run twice); a timeout is never sent again.
4. `errors(what, sent)` turns Redis errors into `BackendUnavailable` ("nothing was
   changed") or `BackendTimeout` ("may or may not": an attempt may have reached Redis);
   every read outside this module runs inside it.

State rules: a state change is one Lua script in `lua/` sent with `run`; Lua never
builds a key name (callers pass keys from `podjobs.keys` / `iteration.iterkeys` in KEYS,
or a key prefix from them in ARGV where a script must address a per-job key it only
learns inside Redis). Reads may use `redis` inside `errors(...)`, with keys from those
modules only.

Why a base class of `RedisBackend` rather than methods on it: the transport (pools,
scripts, error wording, the re-send rule) is shared by every package, while the
backend's typed methods are the queue's own state changes; `RedisBackend(Gateway)`
keeps `backend.run(...)` one call for the packages that add their own typed methods
(iteration's store, pods' moves) without any of them reaching a private member.
import-linter (pyproject) allows `redis` in this module and `podjobs.backend` only.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelManagedConnection

try:  # redis[hiredis] is a dependency; a plain redis-py install packs commands itself
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - without hiredis
    _pack_command = None  # type: ignore[assignment]

from podjobs.errors import BackendTimeout, BackendUnavailable, ConfigurationError
from podjobs.record import Record

__all__ = ["SCRIPT_ATTEMPTS", "SENTINEL_SCHEME", "UNREACHABLE", "Gateway", "RedisError", "Script",
           "ScriptError", "SentinelURL", "redacted", "sentinel_url",
           "script", "scripts", "text"]

#: redis-py's errors that mean the server could not be reached or did not answer
UNREACHABLE: tuple[type[RedisError], ...] = (redis.ConnectionError, redis.TimeoutError)

#: attempts of one script call on dropped connections (10 ms growing to 1 s between them)
SCRIPT_ATTEMPTS = 8

_INCLUDE = re.compile(r"^--!\s*include\s+([A-Za-z0-9_]+)\s*$")
#: redis-py 8 reads a reply with a timeout of the call's own (`read_response(timeout=)`);
#: before it, a blocked read is bounded by the connection's socket timeout alone
_READ_TIMEOUT = "timeout" in inspect.signature(redis.connection.Connection.read_response).parameters


class ScriptError(ConfigurationError):
    """A Lua script that cannot be loaded (a missing include, an unknown directive)."""


class Script(Record):
    """One loaded script: its name, its text with the includes expanded, and its SHA-1."""

    __slots__ = ("name", "text", "sha")

    def __init__(self, name: str, text: str, sha: str) -> None:
        self.name = name
        self.text = text
        self.sha = sha


#: the scripts, installed beside this module (package data; podjobs is never run zipped).
#: A plain path: importlib.resources.files() cost ~0.7 ms a call at a worker's start.
_LUA = Path(__file__).with_name("lua")


def _lua_dir() -> Path:
    return _LUA


def _read(rel: str) -> str | None:
    f = _lua_dir().joinpath(rel)
    return f.read_text() if f.is_file() else None


def expand(name: str, source: str, read: Any = _read) -> str:
    """`source` (the text of lua/<name>.lua) with every `--! include X` line replaced by
    lua/include/X.lua (expanded in turn, each include once). ScriptError names the file
    and line of a missing include or an unknown `--!` line."""
    seen: set[str] = set()

    def walk(rel: str, text_: str) -> list[str]:
        out: list[str] = []
        for n, line in enumerate(text_.splitlines(), 1):
            if not line.startswith("--!"):
                out.append(line)
                continue
            m = _INCLUDE.match(line)
            if m is None:
                raise ScriptError(f"lua/{rel} line {n}: {line.strip()!r} is not a directive "
                                  f"podjobs knows; write '--! include NAME' (lua/include/NAME.lua)")
            inc = m.group(1)
            if inc in seen:
                continue
            body = read(f"include/{inc}.lua")
            if body is None:
                raise ScriptError(f"lua/{rel} line {n}: include {inc!r} not found: there is no "
                                  f"lua/include/{inc}.lua (available: {', '.join(includes()) or 'none'})")
            seen.add(inc)
            out += walk(f"include/{inc}.lua", body)
        return out

    return "\n".join(walk(f"{name}.lua", source)) + "\n"


def includes() -> list[str]:
    d = _lua_dir().joinpath("include")
    return sorted(f.name[:-4] for f in d.iterdir() if f.name.endswith(".lua")) if d.is_dir() else []


_cache: dict[str, Script] = {}
_cache_lock = threading.Lock()


def script(name: str) -> Script:
    """The script lua/<name>.lua, includes expanded, loaded once per process."""
    got = _cache.get(name)
    if got is not None:
        return got
    source = _read(f"{name}.lua")
    if source is None:
        raise ScriptError(f"no Lua script lua/{name}.lua in podjobs")
    body = expand(name, source)
    s = Script(name, body, hashlib.sha1(body.encode()).hexdigest())
    with _cache_lock:
        return _cache.setdefault(name, s)


def scripts() -> list[Script]:
    """Every script of lua/ (core, iteration and pods alike), loaded."""
    return [script(f.name[:-4]) for f in sorted(_lua_dir().iterdir(), key=lambda f: f.name)
            if f.name.endswith(".lua")]


def text(v: bytes | str) -> str:
    """A Redis reply as str."""
    return v.decode() if isinstance(v, bytes) else v


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


#: redis-py's retries of a read after a connection error (Gateway(retries=))
RETRIES = 10


def _retry(retries: int = RETRIES) -> Retry:
    """redis-py's retries (10, 10 ms growing to 1 s), on connection errors only. By default
    redis-py also sends a command again after a timeout: a script that was only slow would
    then run twice (an enqueue would push its job twice). A timeout raises BackendTimeout."""
    return Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), retries,
                 supported_errors=(redis.ConnectionError,))


def _script_retry() -> Retry:
    """No retries inside redis-py for script calls: Gateway.run retries them itself,
    knowing whether each attempt got as far as sending."""
    return Retry(NoBackoff(), 0)


def never_sent(exc: redis.ConnectionError) -> bool:
    """True when a connection error came from connecting (refused, unreachable): the
    command was not sent. redis-py words these 'Error N connecting to HOST:PORT' and
    'Timeout connecting to server'. Behind Sentinel also: no primary known yet, and a
    demoted primary's READONLY refusal (redis-py then drops the connection)."""
    if isinstance(exc, MasterNotFoundError):
        return True
    text_ = str(exc)
    return "connecting to" in text_ or "previous master is now a slave" in text_


SENTINEL_SCHEME = "redis+sentinel://"


class SentinelURL(Record):
    """A parsed `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[?db=N]`.
    `wait=N`: an enqueue is acknowledged only once N replicas have it (Redis WAIT);
    `wait_ms=M`: how long WAIT may block (then BackendTimeout, "may or may not")."""

    __slots__ = ("sentinels", "service", "db", "password", "wait", "wait_ms")

    def __init__(self, sentinels: tuple[tuple[str, int], ...], service: str, db: int = 0,
                 password: str | None = None, wait: int = 0, wait_ms: int = 1000) -> None:
        self.sentinels = sentinels
        self.service = service
        self.db = db
        self.password = password
        self.wait = wait
        self.wait_ms = wait_ms


def sentinel_url(url: str) -> SentinelURL | None:
    """The parts of a Sentinel URL; None for any other URL; ConfigurationError naming what is
    wrong in a malformed one."""
    if not url.startswith(SENTINEL_SCHEME):
        return None
    rest = url[len(SENTINEL_SCHEME):]
    where, _, path = rest.partition("/")
    password = None
    if "@" in where:
        auth, where = where.rsplit("@", 1)
        password = auth.split(":", 1)[1] if ":" in auth else auth
    path, _, query = path.partition("?")
    shape = ("use redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[?db=N], e.g. "
             "redis+sentinel://10.0.0.5:26379,10.0.0.6:26379/pod1?db=0")
    hosts: list[tuple[str, int]] = []
    for part in where.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"{redacted(url)}: sentinel address {part!r} is not "
                                     f"HOST:PORT; {shape}")
        hosts.append((host, int(port)))
    if not path.strip("/"):
        raise ConfigurationError(f"{redacted(url)}: no service name (the sentinels' "
                                 f"primary name) after the addresses; {shape}")
    opts = {"db": 0, "wait": 0, "wait_ms": 1000}
    for item in filter(None, query.split("&")):
        k, _, v = item.partition("=")
        if k in opts and v.isdigit():
            opts[k] = int(v)
        else:
            raise ConfigurationError(f"{redacted(url)}: unknown or bad option {item!r} (db=N, "
                                     f"wait=REPLICAS, wait_ms=MS); {shape}")
    return SentinelURL(tuple(hosts), path.strip("/"), opts["db"], password, opts["wait"],
                       opts["wait_ms"])


class _FollowingConnection(SentinelManagedConnection):
    """A Sentinel-managed connection that asks the sentinels for the primary on every connect.

    redis-py's own asks only when the pool hands out a connection: a connection that
    reconnects by itself (a retry inside a command, a connection a thread keeps) goes back to
    the address it had, which after a failover is the dead primary (seen: workers stuck on
    'Error 111 connecting to' the old port for as long as they ran). `_connect` is where
    redis-py opens the socket to `host:port`, on every path."""

    def _connect(self) -> Any:
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super()._connect()  # type: ignore[no-untyped-call]


#: the wire protocol podjobs speaks: RESP2. redis-py 8 defaults to RESP3 (HELLO 3 on every
#: connect, push-message and maintenance-notification handling on every reply), which cost the
#: job path ~20% of its worker CPU per job (bench-peers A/B, 2026-12-01); every reply podjobs reads
#: (Lua scripts' replies, hashes, lists, sorted sets) means the same in both. A URL's own
#: `?protocol=3` still wins (redis-py lets URL options override keyword arguments).
PROTOCOL = 2

#: redis-py's name and version for CLIENT SETINFO, given once: redis-py 8 otherwise looks its
#: own version up with importlib.metadata for every client and every new connection (~0.5 ms
#: each, ~2 ms the first time: a worker opens several before its first job). redis-py < 8 has
#: no DriverInfo and reads its version once at import.
_IDENTITY: dict[str, Any] = {}
try:
    from redis.driver_info import DriverInfo
except ImportError:  # redis-py < 8
    pass
else:
    _IDENTITY["driver_info"] = DriverInfo(name="redis-py", lib_version=redis.__version__)


def _connect(url: str, retry: Retry, socket_timeout: float, connect_timeout: float) -> redis.Redis:
    """A client on `url`: a plain Redis URL, or the primary of a Sentinel URL."""
    parts = sentinel_url(url)
    if parts is None:
        return redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                    socket_connect_timeout=connect_timeout,
                                    health_check_interval=30, retry=retry, protocol=PROTOCOL,
                                    **_IDENTITY)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(parts.sentinels), socket_timeout=connect_timeout,
        sentinel_kwargs={"socket_timeout": connect_timeout,
                         "socket_connect_timeout": connect_timeout, **_IDENTITY})
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        parts.service, connection_class=_FollowingConnection, db=parts.db,
        password=parts.password, socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout, health_check_interval=30, retry=retry,
        protocol=PROTOCOL, **_IDENTITY)
    return client


class _Held:
    """A connection a thread keeps (Gateway._direct); given back to its pool when a call on it
    fails (`give_back`) or when the thread's locals are dropped (the thread ended), never
    across a fork."""

    __slots__ = ("conn", "pid", "pool")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.pid = os.getpid()
        self.conn: Any = pool.get_connection()

    def give_back(self) -> None:
        """Disconnect and return the connection to its pool (once)."""
        conn, self.conn = self.conn, None
        if conn is None or self.pid != os.getpid():
            return
        try:
            conn.disconnect()
            self.pool.release(conn)
        except Exception:  # a closed pool: nothing to give back
            pass

    def __del__(self) -> None:
        try:
            if self.conn is not None and self.pid == os.getpid():
                self.pool.release(self.conn)
        except Exception:  # interpreter exit, a closed pool: nothing to give back
            pass


class Gateway:
    """One pod's Redis: its pools, its scripts and its error wording (see the module doc)."""

    #: scripts acknowledged only once `wait=N` replicas have their writes (Sentinel URLs)
    DURABLE = frozenset({"enqueue"})

    def __init__(self, url: str, *, socket_timeout: float = 10.0, connect_timeout: float = 5.0,
                 retries: int = RETRIES) -> None:
        self.url = url  # as given: a password reference stays one in messages (podjobs.secrets)
        if "${" in url:  # a password reference (podjobs.secrets, loaded only then)
            from podjobs.secrets import resolve

            url = resolve(url)
        #: what `redis` is made of, on first use
        self._reads = (url, retries, connect_timeout)
        #: the scripts' own pool, without redis-py's retries (see run)
        self._once: redis.Redis = _connect(url, _script_retry(), socket_timeout, connect_timeout)
        parts = sentinel_url(url)
        #: (replicas, ms) a DURABLE script's reply waits for (Redis WAIT); (0, 0): none
        self.replication = (parts.wait, parts.wait_ms) if parts and parts.wait else (0, 0)
        self.socket_timeout = socket_timeout
        #: each thread's script connection (see _direct), all of them for close()
        self._local = threading.local()
        self._directs: weakref.WeakSet[Any] = weakref.WeakSet()
        #: scripts this process has sent whole (EVAL) to this Redis: later calls send the SHA
        #: only (a Redis restart or SCRIPT FLUSH answers NOSCRIPT, and run loads it again)
        self._sent_whole: set[str] = set()

    @functools.cached_property
    def redis(self) -> redis.Redis:
        """Reads (and the acker's batch): redis-py retries connection errors (`retries`: 0 for
        a probe, whose answer must come within its timeout). Made on first use: a worker's
        start-up needs only the scripts' pool (a Redis client costs ~1.6M instructions)."""
        url, retries, connect_timeout = self._reads
        return _connect(url, _retry(retries), self.socket_timeout, connect_timeout)

    def _close_reads(self) -> None:
        reads = self.__dict__.get("redis")
        if reads is not None:
            reads.close()

    def _direct(self) -> Any:
        """This thread's own script connection: taken from the scripts' pool on first use (an
        idle, connected one when there is one) and kept; it goes back to the pool when the
        thread ends (`_Held`), and a forked child takes its own."""
        local = self._local
        held = getattr(local, "held", None)
        if held is None or held.pid != os.getpid() or held.conn is None:
            held = local.held = _Held(self._once.connection_pool)
            self._directs.add(held.conn)
        return held.conn

    def release_connection(self) -> None:
        """This thread makes no more calls for a while: put its script connection back in the
        pool, still connected, for the next thread that needs one (the worker's main thread,
        done with its start-up calls, hands it to the fetcher: one connect less before the
        first job)."""
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is None or held.conn is None or held.pid != os.getpid():
            return
        conn, held.conn = held.conn, None
        self._directs.discard(conn)
        try:
            self._once.connection_pool.release(conn)
        except Exception:  # a closed pool: nothing to give back
            pass

    def _drop_direct(self) -> None:
        """Give this thread's script connection back after an error on it: the next call
        checks one out of the pool again, and a pool checkout connects the way the pool
        does. A connection that only reconnects by itself would go back to the address it
        had: behind Sentinel that is the failed primary, forever; the pool's connect asks the
        sentinels for the current primary."""
        held = getattr(self._local, "held", None)
        if held is not None:
            held.give_back()

    @contextmanager
    def _using(self) -> Iterator[Any]:
        """This thread's script connection for one exchange; dropped (see _drop_direct) when
        the exchange fails on the connection (refused, broken, timed out, a demoted primary),
        so a half-read reply is never left on it."""
        conn = self._direct()
        try:
            yield conn
        except UNREACHABLE:
            self._drop_direct()
            raise

    def _call(self, *args: Any) -> Any:
        """One command on this thread's script connection. Packed by hiredis directly:
        redis-py's packer walks every argument in Python first (10 us a 20-argument EVALSHA
        against hiredis' 4 us here); an argument hiredis refuses (None, a bool) goes the
        redis-py way, which raises its DataError."""
        with self._using() as conn:
            packed = None
            if _pack_command is not None:
                with suppress(TypeError):
                    packed = _pack_command(args)
            if packed is not None:
                conn.send_packed_command((packed,))
            else:
                conn.send_command(*args)
            return conn.read_response()

    def _close_directs(self) -> None:
        for conn in list(self._directs):
            conn.disconnect()

    @contextmanager
    def errors(self, what: str, sent: bool = False) -> Iterator[None]:
        """Redis errors as BackendUnavailable (nothing was changed) or BackendTimeout (the
        change may or may not have been made: a timeout after the command was sent, or a
        dropped connection when `sent` says an attempt may have reached Redis)."""
        try:
            yield
        except redis.ConnectionError as exc:
            if sent:
                raise BackendTimeout(
                    f"cannot {what}: the connection to Redis at {redacted(self.url)} broke "
                    f"({exc}); the change may or may not have been made. Check the pod's Redis "
                    f"('podjobs dev status'); repeating the same call is safe"
                ) from exc
            raise BackendUnavailable(
                f"cannot {what}: Redis at {redacted(self.url)} is unreachable ({exc}); "
                f"nothing was changed. Check that the pod's Redis runs ('podjobs dev status')"
            ) from exc
        except redis.TimeoutError as exc:
            if "connecting" in str(exc) and not sent:
                raise BackendUnavailable(
                    f"cannot {what}: Redis at {redacted(self.url)} did not accept a connection "
                    f"in time ({exc}); nothing was changed. Check the pod's Redis "
                    f"('podjobs dev status')"
                ) from exc
            raise BackendTimeout(
                f"cannot {what}: Redis at {redacted(self.url)} did not answer in time ({exc}); "
                f"the change may or may not have been made. Check the pod's Redis (its load, "
                f"'podjobs dev status')"
            ) from exc
        except redis.ResponseError as exc:
            if isinstance(exc, redis.exceptions.OutOfMemoryError) or str(exc).startswith("OOM"):
                raise BackendUnavailable(
                    f"cannot {what}: Redis at {redacted(self.url)} is out of memory ({exc}); "
                    f"nothing was written. Raise maxmemory or drain the queues"
                ) from exc
            raise

    def run(self, name: str, what: str, keys_: Sequence[str], args: Sequence[Any],
            repeatable: bool = True) -> Any:
        """Run script `name` (lua/<name>.lua) in one round trip. After a dropped connection
        it is sent again (up to SCRIPT_ATTEMPTS times) when it never got through, or when it
        is `repeatable` (safe to run twice); a timeout is never sent again. The error says
        "may or may not" once any attempt may have reached Redis."""
        s = script(name)
        sent = False
        delay = 0.01
        attempt = 0
        replicas = self.replication[0] if name in self.DURABLE else 0
        while True:
            attempt += 1
            try:
                try:
                    return self._send(s, keys_, args, replicas, what)
                except redis.exceptions.NoScriptError:
                    self._call("SCRIPT", "LOAD", s.text)
                    return self._send(s, keys_, args, replicas, what)
            except redis.ConnectionError as exc:
                sent = sent or not never_sent(exc)
                if attempt < SCRIPT_ATTEMPTS and (repeatable or not sent):
                    time.sleep(delay)
                    delay = min(1.0, delay * 2)
                    continue
                with self.errors(what, sent):
                    raise
            except redis.RedisError:
                with self.errors(what, sent):
                    raise

    def run_after_wait(self, wait_keys: Sequence[str], timeout_s: float, name: str, what: str,
                       keys_: Sequence[str], args: Sequence[Any]) -> Any:
        """BLPOP on `wait_keys` (up to `timeout_s`), then script `name`, in ONE round trip.

        Redis runs a connection's commands in order and holds the ones behind a blocked BLPOP
        until it returns, so the script runs the moment a wake token arrives (or the wait ends)
        without a second round trip. Not sent again here: a caller whose script is repeatable
        asks again itself (the fetcher does, with the same request id)."""
        s = script(name)
        if not _READ_TIMEOUT:  # redis-py < 8: the wait must end inside the socket timeout
            timeout_s = min(timeout_s, self.socket_timeout / 2)
        with self.errors(what, sent=True), self._using() as conn:
            conn.send_packed_command(conn.pack_commands([
                ("BLPOP", *wait_keys, timeout_s), ("EVALSHA", s.sha, len(keys_), *keys_, *args)]))
            try:
                if _READ_TIMEOUT:
                    conn.read_response(timeout=timeout_s + self.socket_timeout)
                else:
                    conn.read_response()
                try:
                    return conn.read_response()
                except redis.exceptions.NoScriptError:
                    self._call("SCRIPT", "LOAD", s.text)
                    return self._call("EVALSHA", s.sha, len(keys_), *keys_, *args)
            except redis.exceptions.ResponseError:
                self._drop_direct()  # the BLPOP's error: the script's reply may still be unread
                raise

    def _send(self, s: Script, keys_: Sequence[str], args: Sequence[Any], replicas: int,
              what: str) -> Any:
        if not replicas:
            if s.sha in self._sent_whole:
                return self._call("EVALSHA", s.sha, len(keys_), *keys_, *args)
            # the first call of a script from this process: EVAL caches it in Redis as SCRIPT
            # LOAD does, in one round trip instead of EVALSHA, NOSCRIPT, LOAD and EVALSHA again
            self._sent_whole.add(s.sha)
            return self._call("EVAL", s.text, len(keys_), *keys_, *args)
        # WAIT counts the writes of its own connection: both on this thread's connection
        failed: Exception | None = None
        with self._using() as conn:
            conn.send_packed_command(conn.pack_commands([
                ("EVALSHA", s.sha, len(keys_), *keys_, *args),
                ("WAIT", replicas, self.replication[1])]))
            try:
                reply = conn.read_response()
            except redis.exceptions.ResponseError as exc:  # the script's error: WAIT's follows
                failed, reply = exc, None
            try:
                acked: Any = conn.read_response()
            except redis.exceptions.ResponseError as exc:
                acked = exc
        if failed is not None:
            raise failed
        if isinstance(acked, Exception) or int(acked) < replicas:
            raise BackendTimeout(
                f"cannot {what} for sure: Redis at {redacted(self.url)} wrote it, but "
                f"{acked if not isinstance(acked, Exception) else 0} of the {replicas} "
                f"replica(s) the URL's wait= asks for confirmed it within "
                f"{self.replication[1]} ms; a failover now may lose it. Check the replicas "
                f"('INFO replication'); repeating the same call is safe")
        return reply

    def load_scripts(self) -> None:
        """Load every script into this Redis now (so a first EVALSHA finds it)."""
        with self.errors("load the Lua scripts"):
            for s in scripts():
                self._once.script_load(s.text)

    def now_ms(self) -> int:
        """Redis' clock in milliseconds."""
        with self.errors("read Redis' clock"):
            sec, usec = self.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    def ping(self) -> None:
        """Ping on both pools (the scripts' own one too)."""
        with self.errors("connect"):
            self.redis.ping()
            self._once.ping()
