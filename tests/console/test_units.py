"""Pure functions of the console: error statuses, metric parsing, audit scrubbing, rates."""

from __future__ import annotations

import pytest

from inflow.console.api import status_of
from inflow.console.audit import scrub
from inflow.console.exceptions import BadRequest, Forbidden, NotFound, Unauthorized
from inflow.console.health import metric_by_label, metric_sums
from inflow.console.sampler import errors_from_metrics
from inflow.console.topics import component_of
from inflow.kafka.errors import KafkaFault, Kind
from inflow.sinks.streams.exceptions import StreamDefinitionError, UnknownStreamError
from inflow.workspaces.exceptions import WorkspaceError, WorkspaceNotFound

METRICS = """# TYPE inflow_gateway_rejected_elements counter
inflow_gateway_rejected_elements_total{type="bad"} 2.0
inflow_gateway_rejected_elements_total{type="worse"} 3.0
inflow_gateway_rejected_elements_created{type="bad"} 1.7e9
# TYPE inflow_gateway_records counter
inflow_gateway_records_total{topic="a"} 10.0
# TYPE inflow_streams_delivered_events counter
inflow_streams_delivered_events_total{stream="s1"} 4.0
inflow_streams_delivered_events_total{stream="s2"} 6.0
"""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadRequest("x"), 400),
        (Unauthorized("x"), 401),
        (Forbidden("x"), 403),
        (NotFound("x"), 404),
        (WorkspaceNotFound("x"), 404),
        (UnknownStreamError("x"), 404),
        (WorkspaceError("x"), 400),
        (StreamDefinitionError("x"), 400),
        (KafkaFault("broker away", kind=Kind.RETRIABLE), 503),
        (KafkaFault("topic missing", kind=Kind.PERMANENT), 400),
    ],
)
def test_errors_are_answered_with_their_status(error: Exception, status: int) -> None:
    assert status_of(error) == status


def test_metrics_are_summed_by_name_and_by_label() -> None:
    sums = metric_sums(METRICS)
    assert sums["inflow_gateway_rejected_elements_total"] == 5.0
    assert "inflow_gateway_rejected_elements_created" not in sums
    by_stream = metric_by_label(METRICS, "inflow_streams_delivered_events_total", "stream")
    assert by_stream == {"s1": 4.0, "s2": 6.0}
    assert errors_from_metrics(METRICS) == 5.0 and errors_from_metrics(None) is None


def test_audit_detail_never_holds_secrets() -> None:
    detail = {
        "body": {"workspace_id": "W", "key": "k1", "auth": {"password": "p"}, "headers": {"X": "v"}},
        "definition": {"secret_key": "s", "pgp": {"passphrase": "x"}, "name": "imp"},
        "token": "t",
    }
    assert scrub(detail) == {
        "body": {"workspace_id": "W", "key": "**********", "auth": "**********", "headers": "**********"},
        "definition": {"secret_key": "**********", "pgp": "**********", "name": "imp"},
        "token": "**********",
    }


def test_consumer_groups_are_told_apart_by_component() -> None:
    assert component_of("inflow.streams.s1.retry", "inflow") == "sink"
    assert component_of("inflow.processors.router", "inflow") == "worker"
    assert component_of("inflow.s3-import-pollers", "inflow") == "poller"
    assert component_of("inflow.something", "inflow") == "other"
