"""Prometheus metrics of the API, in a registry owned by the app (no global registry).

Labels are the route *template* (``/api/v1/users/{address}``), the method and the status: never
a user, an address or a token. Requests that match no route are labelled ``<unmatched>``.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "<unmatched>"


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "idsvc_api_requests",
            "API requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "idsvc_api_request_seconds",
            "API request latency by route template and method",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.in_flight = Gauge(
            "idsvc_api_requests_in_flight", "API requests being served", registry=self.registry
        )
        self.audit_dropped = Gauge(
            "idsvc_api_audit_dropped", "audit events dropped (queue full)", registry=self.registry
        )
        self.auth_audit_dropped = Gauge(
            "idsvc_audit_dropped",
            "audit events dropped because the audit queue was full (every worker process)",
            registry=self.registry,
        )


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, capture)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = str(scope.get("method", ""))[:16]
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - start)
