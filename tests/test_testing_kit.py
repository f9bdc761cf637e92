"""The testing kit (podjobs.testing) as an application's suite uses it: each case writes a
user's test file and runs it with pytest's `pytester` (in a subprocess, so the plugin loads
by its entry point, like in a user's project)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

JOBS = '''
import threading

import podjobs
from podjobs.iteration import IterationJob, enumerators

LOG = []
WELCOMED = threading.Event()

@podjobs.job(retries=2, backoff=podjobs.constant(60))
def flaky(n):
    LOG.append(("flaky", n))
    if sum(1 for e in LOG if e[0] == "flaky") < 3:
        raise RuntimeError("not yet")

@podjobs.job(retries=0)
def broken(n):
    raise ValueError(f"bad {n}")

@podjobs.job()
def signup(user_id):
    LOG.append(("signup", user_id, podjobs.current().tenant))
    welcome.enqueue(user_id, tenant=podjobs.current().tenant)

@podjobs.job(queue="mail")
def welcome(user_id):
    LOG.append(("welcome", user_id))
    WELCOMED.set()

@podjobs.job()
def step(n):
    LOG.append(("step", n))

class Count(IterationJob):
    checkpoint_every = 1
    max_runtime = None

    def build_enumerator(self, ctx, cursor, *, stop):
        return enumerators.int_range(0, stop, cursor)

    def each_iteration(self, ctx, i, *, stop):
        LOG.append(("item", i))

THROTTLED = []

def _busy(ctx):
    # says "busy" once, after two items: the job checkpoints and puts itself back 30 s later
    busy = len(LOG) == 2 and not THROTTLED
    if busy:
        THROTTLED.append(ctx.job_id)
    return busy

Count.throttle_on(_busy, backoff=30)
'''


@pytest.fixture
def app(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(myjobs=JOBS)
    pytester.makeconftest("import myjobs\n")
    return pytester


def test_inline_runs_jobs_followups_retries_and_iteration(app: pytest.Pytester) -> None:
    app.makepyfile(test_inline='''
import pytest
import podjobs
import myjobs
from podjobs.testing import JobFailed

def test_followups(podjobs_inline):
    myjobs.signup.enqueue(7, tenant="acme")
    assert myjobs.LOG == [("signup", 7, "acme"), ("welcome", 7)]
    podjobs_inline.assert_enqueued(myjobs.welcome, [7], tenant="acme", queue="mail")

def test_chained_call(podjobs_inline):
    myjobs.LOG.clear()
    myjobs.step.call(1).then(myjobs.step, 2).then(myjobs.step, 3).enqueue()
    assert myjobs.LOG == [("step", 1), ("step", 2), ("step", 3)]

def test_retries_without_waiting(podjobs_inline):
    myjobs.LOG.clear()
    myjobs.flaky.enqueue(1)
    assert myjobs.LOG == [("flaky", 1)] * 3
    assert [c.attempt for c in podjobs_inline.ran] == [0, 1, 2]

def test_dead_raises(podjobs_inline):
    with pytest.raises(JobFailed, match="ValueError: bad 3"):
        myjobs.broken.enqueue(3)

def test_iteration_resumes_to_the_end(podjobs_inline):
    myjobs.LOG.clear()
    myjobs.Count.enqueue(stop=4)
    assert myjobs.LOG == [("item", i) for i in range(4)]
    assert myjobs.THROTTLED                   # it stopped after two items...
    assert len(podjobs_inline.ran) == 2       # ...and came back at once, from its cursor
''')
    result = app.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_fake_captures_and_drains(app: pytest.Pytester) -> None:
    app.makepyfile(test_fake='''
import myjobs

def test_captured_then_drained(podjobs_fake):
    myjobs.LOG.clear()
    myjobs.signup.enqueue(9, tenant="acme")
    assert myjobs.LOG == []                                  # nothing ran
    podjobs_fake.assert_enqueued(myjobs.signup, [9], tenant="acme")
    podjobs_fake.assert_enqueued("myjobs.signup", count=1)
    assert podjobs_fake.drain() == 2                          # signup, then its welcome
    assert myjobs.LOG == [("signup", 9, "acme"), ("welcome", 9)]
    podjobs_fake.assert_enqueued(myjobs.welcome, [9], tenant="acme")
    assert podjobs_fake.waiting == []

def test_delayed_and_bulk(podjobs_fake):
    myjobs.step.enqueue_in(3600, 1)
    myjobs.step.enqueue_many([[2], [3]])
    assert [c.args for c in podjobs_fake.waiting] == [[1], [2], [3]]
    assert podjobs_fake.waiting[0].due_ms > 0
    podjobs_fake.drain()
    assert podjobs_fake.waiting == []

def test_failing_assertion_says_what_was_enqueued(podjobs_fake):
    myjobs.step.enqueue(5)
    podjobs_fake.assert_enqueued(myjobs.step, [6], tenant="t9")
''')
    result = app.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*expected myjobs.step args=[[]6[]] tenant='t9' enqueued at least once, found 0*",
        "*<myjobs.step([[]5[]], {}) on 'default'>*",
    ])


def test_ini_mode_puts_every_test_inline(app: pytest.Pytester) -> None:
    app.makeini("[pytest]\npodjobs_mode = inline\n")
    app.makepyfile(test_all='''
import myjobs

def test_no_fixture_needed():
    myjobs.LOG.clear()
    myjobs.signup.enqueue(1)
    assert myjobs.LOG == [("signup", 1, None), ("welcome", 1)]
''')
    app.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_ini_mode_refuses_an_unknown_mode(app: pytest.Pytester) -> None:
    app.makeini("[pytest]\npodjobs_mode = eager\n")
    app.makepyfile(test_x="def test_x():\n    pass\n")
    result = app.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*podjobs_mode = 'eager'*use inline or fake*"])


def test_redis_fixture_is_a_private_real_server(app: pytest.Pytester) -> None:
    """Jobs enqueued under `podjobs_redis` land in a real redis-server the fixture started
    (a worker on it runs them), and the next test starts from an empty one."""
    app.makepyfile(test_redis='''
import myjobs
from podjobs.backend import RedisBackend
from podjobs.worker import Worker, WorkerConfig

def test_enqueue_and_work(podjobs_redis, podjobs_redis_server):
    assert podjobs_redis.startswith("redis://127.0.0.1:")
    assert podjobs_redis_server.port not in (6379,)
    myjobs.LOG.clear()
    myjobs.welcome.enqueue(3)
    backend = RedisBackend(podjobs_redis)
    assert len(backend.queued("mail")) == 1
    w = Worker(backend, WorkerConfig(queues=["mail"], concurrency=1, poll_interval=0.05))
    w.start()
    try:
        assert myjobs.WELCOMED.wait(60)
        assert myjobs.LOG == [("welcome", 3)]
    finally:
        w.stop()

def test_starts_empty(podjobs_redis):
    assert RedisBackend(podjobs_redis).queue_names() == []
''')
    result = app.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_zookeeper_fixture_starts_a_private_server(app: pytest.Pytester) -> None:
    app.makepyfile(test_zk='''
from podjobs.pods.zk import ZK

def test_zk(podjobs_zookeeper):
    z = ZK(podjobs_zookeeper, "/app-test")
    z.start(20)
    try:
        z.ensure_path("/app-test/x")
        assert z.exists("/app-test/x")
    finally:
        z.stop()
''')
    result = app.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
