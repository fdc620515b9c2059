"""Import operations shared by ``inflow imports ...`` and the admin API: one implementation of each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.definition import ImportDefinition, parse_definition
from inflow.producers.s3_import.exceptions import DefinitionError
from inflow.producers.s3_import.importer import ProgressFn
from inflow.producers.s3_import.poller import Poller, RunSummary
from inflow.producers.s3_import.runs import RunStore
from inflow.producers.s3_import.storage import Folder, S3File
from inflow.producers.s3_import.store import DefinitionStore

MAX_REPORT_BYTES = 50 * 1024 * 1024  # an error report larger than this is fetched from S3 directly


def add_definition(
    store: DefinitionStore, data: dict[str, Any], *, where: str, replace: bool = False
) -> ImportDefinition:
    """Validate one definition (a mapping, as in a definition file) and store it; secrets are encrypted."""
    if not isinstance(data, dict):
        raise DefinitionError(f"{where}: expected one import definition (a mapping)")
    return store.put(parse_definition(data, where=where), replace=replace)


def run_now(
    kafka: KafkaSettings,
    box: SecretBox,
    name: str,
    default_endpoint: str | None,
    progress: Callable[[S3File], ProgressFn | None] | None = None,
) -> RunSummary:
    """Run an import now, as a poller of the group would: files whose ledger partition another poller owns
    are left to it (listed in ``not_owned``)."""
    poller = Poller(kafka, box, default_endpoint=default_endpoint)
    try:
        d = poller.store.get(name)
        poller.wait_for_partitions()
        return poller.run_import(d, progress)
    finally:
        poller.close()


def error_report(
    definition: ImportDefinition, run: dict[str, Any], default_endpoint: str | None
) -> tuple[str, bytes]:
    """The error report of one run (file name, CSV bytes), read with the import's own S3 credentials."""
    key = run.get("error_report_key")
    if not key:
        raise DefinitionError(f"run {run['run_id']} has no error report (no row failed)")
    data = Folder(definition, default_endpoint).read_report(key, MAX_REPORT_BYTES)
    return key.rsplit("/", 1)[-1], data


def find_run(runs: RunStore, import_name: str, run_id: str) -> dict[str, Any]:
    for run in runs.history(import_name):
        if run["run_id"] == run_id:
            return run
    raise DefinitionError(f"import {import_name!r} has no run {run_id!r}")
