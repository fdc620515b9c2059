"""The importer's per-file Avro encoder: the generic template encoder of :mod:`~inflow.schemas.avro_template`.

The fields that are the same for every row of a file (workspace, run id, source, event name, nulls) are
encoded once by fastavro, and only the fields that vary per row (uuid, user id, attributes, time, origin)
are encoded per row; checked against fastavro on the first row of every file.
"""

from __future__ import annotations

from inflow.schemas.avro_template import template_encoder

__all__ = ["template_encoder"]
