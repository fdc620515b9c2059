"""The producer bridge: a record the producer refuses fails the whole request at once."""

from __future__ import annotations

import pytest

from inflow.producers.bulk_api.delivery import GatewayDelivery
from inflow.producers.bulk_api.elements import Outgoing
from inflow.producers.bulk_api.exceptions import DeliveryError


async def test_a_record_the_producer_refuses_fails_the_request(catalogue_topics):
    delivery = GatewayDelivery(catalogue_topics, 10_000, **{"message.max.bytes": 2000})
    try:
        await delivery.deliver([Outgoing("ingest.records", b"k", b"small")], 1)  # the broker acknowledges
        batch = [Outgoing("ingest.records", b"k", b"ok"), Outgoing("ingest.records", b"k", b"x" * 5000)]
        with pytest.raises(DeliveryError, match="cannot queue record 2 of 2"):
            await delivery.deliver(batch, 2)
    finally:
        assert delivery.close(15) == 0
