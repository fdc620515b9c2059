"""Avro schemas of every Kafka record (``*.avsc``) and the serde that reads and writes them."""

from schemas.exceptions import RegistryError, SerdeError
from schemas.serde import AvroSerde, default_serde

__all__ = ["AvroSerde", "RegistryError", "SerdeError", "default_serde"]
