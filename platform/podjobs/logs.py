"""Log set-up for every podjobs process: `--log-level` and `--log-format text|json`.

- text: `time LEVEL logger: message` (the default, for a terminal);
- json: one JSON object a line, for a log pipeline: ts (ISO 8601 UTC), level, logger, msg,
  and the job fields a record carries (`ctx.logger`'s job_id, job, tenant, pod; the job
  log's queue, attempt, duration_ms, outcome, reason, worker), exception text as `exc`.

Alembic's per-connection INFO lines (most of a scheduler's log) are kept at WARNING
unless the level is DEBUG. The per-job lines (logger `podjobs.jobs`, see
podjobs.chain.joblog) are INFO: `--job-log off` (or the logger's level) switches them off.

A small formatter on the standard library rather than a dependency: it is 20 lines.
"""

from __future__ import annotations

import json
import logging
import time

#: record attributes a JSON line carries when a record has them
FIELDS = ("job_id", "job", "tenant", "pod", "queue", "attempt", "duration_ms", "outcome",
          "reason", "worker")
FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        for f in FIELDS:
            v = record.__dict__.get(f)
            if v is not None:
                doc[f] = v
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def setup(level: str = "info", fmt: str = "text", job_log: bool = True) -> None:
    """Configure the root logger for a podjobs process (replacing earlier handlers)."""
    if fmt not in FORMATS:
        raise ValueError(f"--log-format {fmt!r}: use text or json")
    lvl = getattr(logging, level.upper(), None)
    if not isinstance(lvl, int):
        raise ValueError(f"--log-level {level!r}: use debug, info, warning or error")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(lvl)
    if lvl > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    if not job_log:
        logging.getLogger("podjobs.jobs").setLevel(logging.WARNING)
