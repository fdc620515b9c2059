"""The one Kafka layer: clients, producers, consumer loops and compacted views for every component."""
