"""Prometheus metrics: counters and histograms kept in process, gauges read from the database.

Counts of grants and actions are read at scrape time from the database (the truth), so a
restart never resets them and no code path has to remember to update them.
"""

from peewee import fn
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from daemon.access.outbox import FLAG_AFTER_ATTEMPTS
from daemon.ops import instances
from db import Action, Event, Grant, now_epoch

LATENESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)


class _DatabaseCollector:
    def collect(self):
        grants = GaugeMetricFamily("envoy_proxy_grants", "Grants by state", labels=["state"])
        for state, count in (
            Grant.select(Grant.state, fn.COUNT(Grant.id)).group_by(Grant.state).tuples()
        ):
            grants.add_metric([state], count)
        yield grants
        actions = GaugeMetricFamily(
            "envoy_proxy_actions", "Outbox actions not done, and those given up", labels=["status"]
        )
        pending = Action.done == False  # noqa: E712
        actions.add_metric(["pending"], Action.select().where(pending).count())
        actions.add_metric(
            ["failing"],
            Action.select().where(pending & (Action.attempts >= FLAG_AFTER_ATTEMPTS)).count(),
        )
        actions.add_metric(["dead"], Action.select().where(Action.outcome == "dead").count())
        yield actions
        yield from _instance_gauges(now_epoch())
        quarantined = Event.select().where(Event.body.is_null(False)).count()
        yield GaugeMetricFamily(
            "envoy_proxy_events_quarantined",
            "Deliveries whose planning failed, waiting for their retry",
            value=quarantined,
        )


def _instance_gauges(now: int):
    """Each instance sharing the database: seconds since its heartbeat, claims it holds,
    whether it runs the periodic passes (1 on exactly one instance while all is well)."""
    labels = ["instance", "host"]
    seen = GaugeMetricFamily(
        "envoy_proxy_instance_seen_seconds", "Seconds since the instance's heartbeat", labels=labels
    )
    claims = GaugeMetricFamily(
        "envoy_proxy_instance_claims", "Due work the instance has claimed", labels=labels
    )
    passes = GaugeMetricFamily(
        "envoy_proxy_instance_runs_periodic_passes",
        "1 for the instance running the periodic passes",
        labels=labels,
    )
    for row in instances.registry(now):
        key = [row["id"], row["host"]]
        seen.add_metric(key, row["seen_seconds_ago"])
        claims.add_metric(key, row["claims"])
        passes.add_metric(key, int(row["runs_passes"]))
    yield from (seen, claims, passes)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.events = Counter(
            "envoy_proxy_events",
            "Envoy events by type and answer",
            ["event", "status"],
            registry=self.registry,
        )
        self.proxy_seconds = Histogram(
            "envoy_proxy_proxy_call_seconds",
            "Proxy API call latency",
            ["method", "path", "status"],
            registry=self.registry,
        )
        self.lateness = Histogram(
            "envoy_proxy_action_lateness_seconds",
            "Due time to done, by action kind",
            ["kind"],
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.verifications = Counter(
            "envoy_proxy_verifications",
            "Identity-verification decisions",
            ["decision"],
            registry=self.registry,
        )
        self.verification_deadline_hits = Counter(
            "envoy_proxy_verification_deadline_hits",
            "Verifications answered at the deadline",
            registry=self.registry,
        )

    def with_database(self) -> "Metrics":
        """Also export the grant and action gauges (only where a database is open)."""
        self.registry.register(_DatabaseCollector())
        return self

    def event(self, event: str, status: int) -> None:
        self.events.labels(event or "unknown", str(status)).inc()

    def proxy_call(self, method: str, path: str, status, seconds: float) -> None:
        self.proxy_seconds.labels(method, path, str(status or "error")).observe(seconds)

    def action_done(self, kind: str, late_seconds: float) -> None:
        self.lateness.labels(kind).observe(max(0.0, late_seconds))
