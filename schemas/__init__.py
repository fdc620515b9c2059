"""Avro schemas of every Kafka record (``*.avsc``) and the serde that reads and writes them."""

from inflow.schemas.exceptions import RegistryError, SerdeError
from inflow.schemas.serde import AvroSerde, default_serde

__all__ = ["AvroSerde", "RegistryError", "SerdeError", "default_serde"]
