"""Column mappings and manifests, as MoEngage has them: which file column feeds which attribute, and its type.

A mapping is compiled once against a file's header into a list of small converters, so a row costs one
pass over its mapped cells. Cell conversion errors become :class:`RowError` with the column name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inflow.producers.s3_import.datetimes import parser_for
from inflow.producers.s3_import.exceptions import DefinitionError, RowError


class ColumnType(StrEnum):
    STRING = "string"
    DOUBLE = "double"
    BOOL = "bool"
    DATETIME = "datetime"


class Role(StrEnum):
    """What a column means beyond being an attribute: MoEngage's mandatory mappings (user id, event time)."""

    USER_ID = "user_id"
    ANONYMOUS_ID = "anonymous_id"
    EVENT_TIME_UTC = "event_time_utc"
    EVENT_TIME_APP_TIMEZONE = "event_time_app_timezone"
    IDENTIFIER = "identifier"
    PROJECT = "project"  # moe_project_name: the portfolio project a row belongs to (projects.py)


# moe_attr names that imply a role, so that a plain MoEngage manifest works unchanged.
ROLE_BY_ATTR = {
    "uid": Role.USER_ID,
    "event_time": Role.EVENT_TIME_UTC,
    "event_time_utc": Role.EVENT_TIME_UTC,
    "event_time_app_timezone": Role.EVENT_TIME_APP_TIMEZONE,
    "moe_project_name": Role.PROJECT,
}
TRUE_VALUES = {"true", "1", "yes", "y", "t"}
FALSE_VALUES = {"false", "0", "no", "n", "f"}


class ColumnMapping(BaseModel):
    """One manifest entry: ``column`` -> ``moe_attr`` with an optional type and role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1, description="file column; dot-notation for NDJSON level 2")
    moe_attr: str | None = Field(None, min_length=1, description="attribute name; None leaves it unmapped")
    type: ColumnType = ColumnType.STRING
    datetime_format: str | None = None
    is_skipped: bool = False
    role: Role | None = None

    @model_validator(mode="after")
    def _check(self) -> ColumnMapping:
        if self.type is ColumnType.DATETIME:
            if not self.datetime_format:
                raise ValueError(f"column {self.column!r}: datetime_format is mandatory for datetime")
            parser_for(self.datetime_format)  # raises ValueError naming the 19 formats
        if (
            self.role in (Role.EVENT_TIME_UTC, Role.EVENT_TIME_APP_TIMEZONE)
            and self.type is not ColumnType.DATETIME
        ):
            raise ValueError(f"column {self.column!r}: an event time must have type datetime")
        return self

    @property
    def effective_role(self) -> Role | None:
        return self.role or ROLE_BY_ATTR.get(self.moe_attr or "")


def identity_mapping(mappings: Sequence[ColumnMapping]) -> ColumnMapping | None:
    """The identifier column that identifies each row instead of User ID (identity resolution on): the
    first mapping with role ``identifier`` when no User ID is mapped; None when User ID is mapped (or no
    identifier is)."""
    live = [m for m in mappings if not m.is_skipped and m.moe_attr]
    if any(m.effective_role is Role.USER_ID for m in live):
        return None
    return next((m for m in live if m.effective_role is Role.IDENTIFIER), None)


def parse_manifest(text: str) -> list[ColumnMapping]:
    """Parse an uploaded manifest ``{"mapping": [...]}``; each ``moe_attr`` must be unique."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep for the parser
        raise DefinitionError(f"manifest is not valid JSON: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("mapping"), list):
        raise DefinitionError('manifest must be a JSON object with a "mapping" list')
    out = []
    for i, entry in enumerate(data["mapping"]):
        try:
            out.append(ColumnMapping.model_validate(entry))
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors()
            )
            raise DefinitionError(f"manifest mapping[{i}]: {reasons}") from exc
    check_unique_attrs(out)
    return out


def check_unique_attrs(mappings: Sequence[ColumnMapping]) -> None:
    seen: set[str] = set()
    for m in mappings:
        if m.moe_attr and not m.is_skipped:
            if m.moe_attr in seen:
                raise DefinitionError(f"moe_attr {m.moe_attr!r} is mapped more than once")
            seen.add(m.moe_attr)


def _to_double(raw: Any) -> float:
    if isinstance(raw, bool):
        raise RowError(f"value {raw!r} is not a double")
    try:
        return float(raw)
    except (ValueError, TypeError):
        raise RowError(f"value {raw!r} is not a double") from None


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    low = str(raw).strip().lower()
    if low in TRUE_VALUES:
        return True
    if low in FALSE_VALUES:
        return False
    raise RowError(f"value {raw!r} is not a bool")


def _array(raw: str, cast: Callable[[str], Any]) -> list[Any]:
    """``[a|b|c]``, MoEngage's array cell: elements that fail typecasting are dropped, blanks ignored."""
    out = []
    for item in raw[1:-1].split("|"):
        item = item.strip().strip('"')
        if not item:
            continue
        try:
            out.append(cast(item))
        except RowError:
            continue
    return out


def _try(cast: Callable[[Any], Any], value: Any) -> Any:
    try:
        return cast(value)
    except RowError:
        return None


@dataclass(frozen=True, slots=True)
class Converter:
    """A compiled mapping of one column: index in the row and a function from text to a value."""

    index: int
    column: str
    attr: str
    role: Role | None
    convert: Callable[[Any], Any]


def make_converter(index: int, m: ColumnMapping, default_tz: tzinfo, app_tz: tzinfo) -> Converter:
    """One column's converter; ``None`` means the text is the value (the common string case)."""
    role = m.effective_role
    convert: Callable[[Any], Any] | None
    if m.type is ColumnType.DATETIME:
        parse = parser_for(m.datetime_format or "")
        tz = app_tz if role is Role.EVENT_TIME_APP_TIMEZONE else default_tz

        def convert(raw: Any) -> Any:
            if raw.__class__ is not str:
                raise RowError(f"value {raw!r} is not a date-time text")
            value = parse(raw, tz)
            return value if role is not None else value.isoformat()  # attributes travel as ISO 8601 text

    elif m.type is ColumnType.DOUBLE:

        def convert(raw: Any) -> Any:
            if raw.__class__ is list:
                return [v for v in (_try(_to_double, x) for x in raw) if v is not None]
            if raw.__class__ is str and raw[:1] == "[" and raw[-1:] == "]":
                return _array(raw, _to_double)
            return _to_double(raw)

    elif m.type is ColumnType.BOOL:
        convert = _to_bool
    elif role is None:

        def convert(raw: Any) -> Any:
            if raw.__class__ is str and raw[:1] == "[" and raw[-1:] == "]":
                return _array(raw, str)
            return raw  # text, or a whole NDJSON object / array

    else:
        convert = _identifier_text
    return Converter(index, m.column, m.moe_attr or m.column, role, convert)


def _identifier_text(raw: Any) -> str:
    return raw if raw.__class__ is str else str(raw)


@dataclass
class CompiledMapping:
    """A mapping resolved against a header: converters, and the columns MoEngage reports as unmapped,
    ignored or skipped."""

    converters: list[Converter]
    unmapped_columns: list[str] = field(default_factory=list)
    ignored_manifest_columns: list[str] = field(default_factory=list)
    skipped_columns: list[str] = field(default_factory=list)

    def roles(self) -> set[Role]:
        return {c.role for c in self.converters if c.role is not None}

    def convert(self, cells: Sequence[Any]) -> tuple[dict[str, Any], dict[Role, Any], dict[str, str]]:
        """Attributes, role values and identifiers of one row; empty cells are skipped (no update).

        ``cells`` has one entry per header column (CSV rows of another width never get here).
        """
        attrs: dict[str, Any] = {}
        roles: dict[Role, Any] = {}
        identifiers: dict[str, str] = {}
        for c in self.converters:
            raw = cells[c.index]
            if raw == "" or raw is None:
                continue
            try:
                value = c.convert(raw)
            except RowError as exc:
                raise RowError(f"column {c.column!r}: {exc}") from None
            role = c.role
            if role is None:
                attrs[c.attr] = value
            elif role is Role.IDENTIFIER:
                identifiers[c.attr] = str(value)
                attrs[c.attr] = value
            else:
                roles[role] = value
                if role is Role.ANONYMOUS_ID:
                    attrs[c.attr] = value
        return attrs, roles, identifiers


def compile_mapping(
    header: Sequence[str], mappings: Sequence[ColumnMapping], default_tz: tzinfo, app_tz: tzinfo
) -> CompiledMapping:
    """Resolve a mapping against a header. As with MoEngage manifests, a mapped column missing from the file
    is ignored, a file column no mapping names is unmapped, and a skipped mapping is not imported."""
    index = {name: i for i, name in enumerate(header)}
    by_column = {m.column: m for m in mappings}
    converters, skipped = [], []
    for m in mappings:
        if m.column not in index:
            continue
        if m.is_skipped or not m.moe_attr:
            skipped.append(m.column)
            continue
        converters.append(make_converter(index[m.column], m, default_tz, app_tz))
    return CompiledMapping(
        converters=converters,
        unmapped_columns=[h for h in header if h not in by_column],
        ignored_manifest_columns=[m.column for m in mappings if m.column not in index],
        skipped_columns=skipped,
    )
