"""The schema catalogue: every ``schemas/*.avsc`` and ``schemas/history/*.avsc``, parsed once.

Each entry carries what the serde needs per message, precomputed so encoding and decoding do no schema
work: the fastavro-parsed schema, its Parsing Canonical Form, the CRC-64-AVRO fingerprint and the
10-byte single-object header.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from inflow.schemas.exceptions import SerdeError

SCHEMA_DIR = Path(__file__).resolve().parent
HISTORY_DIR = SCHEMA_DIR / "history"
NAMESPACE = "io.inflow"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
FINGERPRINT_ALGORITHM = "CRC-64-AVRO"
_HISTORY_FILE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")


@dataclass(frozen=True, slots=True)
class SchemaEntry:
    """One schema version with everything the wire format needs, computed once."""

    name: str
    full_name: str
    version: int | None  # None for the current schema, N for history/<Name>.vN.avsc
    schema: dict[str, Any]  # the JSON as written in the file, docs included (what a registry receives)
    parsed: Any  # fastavro's parsed form, reused for every message
    canonical_form: str
    fingerprint: bytes  # 8 bytes, little-endian, as written on the wire
    header: bytes  # C3 01 + fingerprint

    @property
    def label(self) -> str:
        """Name and version for messages, e.g. ``UserUpsert`` or ``UserUpsert v1``."""
        return self.name if self.version is None else f"{self.name} v{self.version}"


@dataclass(frozen=True, slots=True)
class Catalog:
    """Current schemas by short and full name, and every known version by fingerprint."""

    current: Mapping[str, SchemaEntry]
    by_fingerprint: Mapping[bytes, SchemaEntry]
    history: tuple[SchemaEntry, ...]

    def get(self, record_name: str) -> SchemaEntry:
        """The current schema of a record, by ``UserUpsert`` or ``io.inflow.UserUpsert``."""
        try:
            return self.current[record_name]
        except KeyError:
            known = ", ".join(self.names())
            raise SerdeError(f"unknown record {record_name!r}; known records: {known}") from None

    def names(self) -> list[str]:
        """Short names of the current records, sorted."""
        return sorted({entry.name for entry in self.current.values()})


def fingerprint_of(parsed: Any) -> tuple[str, bytes]:
    """Parsing Canonical Form and its CRC-64-AVRO fingerprint (fastavro's hex is already little-endian)."""
    canonical = to_parsing_canonical_form(parsed)
    return canonical, bytes.fromhex(fastavro_fingerprint(canonical, FINGERPRINT_ALGORITHM))


def make_entry(schema: dict[str, Any], version: int | None = None, source: str = "schema") -> SchemaEntry:
    """Parse one record schema and precompute its fingerprint and header."""
    try:
        parsed = parse_schema(schema)
    except Exception as exc:  # fastavro raises SchemaParseException, ValueError, KeyError...
        raise SerdeError(f"invalid Avro schema in {source}: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise SerdeError(f"{source} must define a record schema")
    full_name = str(parsed["name"])
    canonical, fp = fingerprint_of(parsed)
    return SchemaEntry(
        name=full_name.rsplit(".", 1)[-1],
        full_name=full_name,
        version=version,
        schema=schema,
        parsed=parsed,
        canonical_form=canonical,
        fingerprint=fp,
        header=SINGLE_OBJECT_MAGIC + fp,
    )


def _read_json(path: Path) -> dict[str, Any]:
    """Read one .avsc; a broken file is a deployment error, reported with its path."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SerdeError(f"cannot read schema file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SerdeError(f"schema file {path} must hold a JSON object")
    return data


def _load_current(schema_dir: Path) -> list[SchemaEntry]:
    """Every ``<Name>.avsc`` directly in the folder; the file stem must be the record name."""
    entries = []
    for path in sorted(schema_dir.glob("*.avsc")):
        entry = make_entry(_read_json(path), None, str(path))
        if entry.name != path.stem:
            raise SerdeError(
                f"{path} defines record {entry.full_name}; the file must be named {entry.name}.avsc"
            )
        entries.append(entry)
    if not entries:
        raise SerdeError(f"no .avsc schemas found in {schema_dir}")
    return entries


def _load_history(history_dir: Path, current: Mapping[str, SchemaEntry]) -> list[SchemaEntry]:
    """Every ``<Name>.v<N>.avsc``; each must name a record that still has a current schema."""
    entries = []
    for path in sorted(history_dir.glob("*.avsc")) if history_dir.is_dir() else []:
        match = _HISTORY_FILE.match(path.name)
        if match is None:
            raise SerdeError(f"history schema {path} must be named <Name>.v<N>.avsc")
        entry = make_entry(_read_json(path), int(match["version"]), str(path))
        if entry.name != match["name"] or entry.full_name not in current:
            raise SerdeError(f"history schema {path} defines {entry.full_name}, which has no current schema")
        entries.append(entry)
    return entries


@functools.cache
def load_catalog(schema_dir: Path = SCHEMA_DIR, history_dir: Path | None = None) -> Catalog:
    """Parse the folder once per process (cached); ``history_dir`` defaults to ``<schema_dir>/history``."""
    current_list = _load_current(schema_dir)
    current = {e.name: e for e in current_list} | {e.full_name: e for e in current_list}
    history = _load_history(history_dir or schema_dir / "history", current)
    by_fingerprint: dict[bytes, SchemaEntry] = {}
    for entry in [*current_list, *history]:
        # A history version identical on the wire to the current one (doc or default edits) maps to current.
        by_fingerprint.setdefault(entry.fingerprint, entry)
    return Catalog(current=current, by_fingerprint=by_fingerprint, history=tuple(history))


def record_names() -> list[str]:
    """Short names of the records in ``schemas/``."""
    return load_catalog().names()


def schema_json(record_name: str) -> dict[str, Any]:
    """A copy of the current schema of a record as JSON (for topic catalogues and registries)."""
    return copy.deepcopy(load_catalog().get(record_name).schema)
