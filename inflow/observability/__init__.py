"""What every component shares to be watched: a ``/metrics`` and ``/health`` server, JSON-lines logs and a
consumer-lag collector. Sits above the Kafka layer and below the components."""
