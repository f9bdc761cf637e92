"""podjobs' testing kit for your own test suite (see README "Testing your jobs").

- `inline()`: jobs run when enqueued, in this thread (follow-ups, retries, iteration), no
  Redis; `fake()`: enqueues are captured for `assert_enqueued(...)`, `drain()` runs them.
  Both yield a `Jobs` (podjobs.testing.harness).
- `private_redis()`, `private_zookeeper()`: real servers of your own for integration tests
  (podjobs.testing.servers).
- The pytest plugin (podjobs.testing.plugin, loaded by entry point): the fixtures
  `podjobs_inline`, `podjobs_fake`, `podjobs_redis`, `podjobs_redis_server`,
  `podjobs_zookeeper`, and the ini option `podjobs_mode`.
"""

from __future__ import annotations

from .harness import JobFailed, Jobs, fake, inline
from .memory import Captured, MemoryBackend
from .servers import flush, private_redis, private_zookeeper

__all__ = ["Captured", "JobFailed", "Jobs", "MemoryBackend", "fake", "flush", "inline",
           "private_redis", "private_zookeeper"]
