"""The operator routes and the health check.

    GET    /v1/pods                    operator: pods, state, queue sizes, live workers
    GET    /v1/pods/{pod}/queues       operator: one pod's queues
    GET    /v1/migrations              operator: the migration rollout
    GET    /metrics                    Prometheus gauges of every pod and the rollout (no token)
    GET    /healthz                    liveness (no token)
    GET    /readyz                     readiness: 503 while ZooKeeper is disconnected (no token)

(No `from __future__ import annotations`, as in routes_jobs.)
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import Response

from podjobs.surface.api import models
from podjobs.surface.api.auth import Principal
from podjobs.surface.api.responses import json_response, problem
from podjobs.surface.api.service import Service


def add_operator_routes(app: FastAPI, service: Service,
                        operator: Callable[..., Principal]) -> None:
    """The operator views on `app`; `operator` is the dependency that lets operator tokens
    only through."""
    Operator = Annotated[Principal, Depends(operator)]

    @app.get("/v1/pods", response_model=list[models.PodInfo], summary="Pods (operator)",
             responses={401: problem(401, "no or an unknown bearer token"),
                        403: problem(403, "not an operator token")})
    def list_pods(p: Operator) -> Response:
        return json_response(200, service.pods())

    @app.get("/v1/pods/{pod}/queues", response_model=list[models.QueueInfo],
             summary="One pod's queues (operator)",
             responses={401: problem(401, "no or an unknown bearer token"),
                        403: problem(403, "not an operator token"),
                        404: problem(404, "unknown pod"),
                        503: problem(503, "the pod's Redis is unreachable")})
    def pod_queues(pod: str, p: Operator) -> Response:
        return json_response(200, service.pod_queues(pod))

    @app.get("/v1/migrations", response_model=models.MigrationsStatus,
             summary="Migration rollout per shard (operator): podjobs migrations status --json",
             responses={401: problem(401, "no or an unknown bearer token"),
                        403: problem(403, "not an operator token"),
                        503: problem(503, "ZooKeeper is unreachable")})
    def migrations(p: Operator) -> Response:
        return json_response(200, service.migrations())

    registry: list[Any] = []

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus gauges of every pod and of the migration rollout (no token needed, as
        exporters go; podjobs.podmetrics, podjobs.scheduler.metrics)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if not registry:
            registry.append(service.metrics_registry())
        return Response(generate_latest(registry[0]), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", response_model=models.Health, summary="Liveness (no token needed)")
    def healthz() -> Response:
        return json_response(200, service.health())

    @app.get("/readyz", response_model=models.Health,
             summary="Readiness (no token needed): 503 while ZooKeeper is disconnected, so "
                     "the directory may be stale",
             responses={503: problem(503, "ZooKeeper disconnected: the directory may be stale")})
    def readyz() -> Response:
        doc = service.health()
        if doc["zookeeper"] != "connected":
            return json_response(503, {"detail": "ZooKeeper is disconnected: the directory may be stale", **doc}, {"Retry-After": "5"})
        return json_response(200, doc)
