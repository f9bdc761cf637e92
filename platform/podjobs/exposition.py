"""A process' metrics and health over HTTP: `/metrics` in Prometheus' text format
(prometheus-client's exposition of a registry) and `/healthz` (200 when the process says it is healthy, 503 with
the reason otherwise), on its own port, in a daemon thread.

Workers (`podjobs worker --metrics-port N`), the scheduler and `podjobs exporter` serve
one each. It binds 127.0.0.1 unless told otherwise (`--metrics-host 0.0.0.0` in a
container, where the orchestrator scrapes and probes it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("podjobs.exposition")

#: says whether the process is healthy, and why not
Health = Callable[[], tuple[bool, str]]


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, health: Health, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.registry = registry
        self.health = health
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = generate_latest(outer.registry), CONTENT_TYPE_LATEST, 200
                elif path in ("/healthz", "/readyz"):
                    try:
                        ok, why = outer.health()
                    except Exception as exc:  # a probe that raises is a failed probe
                        ok, why = False, f"{type(exc).__name__}: {exc}"
                    body, ctype, code = (why + "\n").encode(), "text/plain; charset=utf-8", 200 if ok else 503
                else:
                    body, ctype, code = b"not found: try /metrics or /healthz\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="podjobs-metrics-http",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics and /healthz",
                 self._server.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
