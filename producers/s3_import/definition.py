"""An import definition (YAML ``imports:`` entry, ``inflow imports add`` file, control-topic record) and
MoEngage's rejection reasons: root folder, trailing slash, more than 10 e-mails, a missing or skipped
mandatory mapping, and a duplicate of another import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from inflow.config.file import describe_validation_error
from inflow.config.identifiers import identifier_named
from inflow.config.secrets import SecretBox
from inflow.producers.s3_import.exceptions import DefinitionError
from inflow.producers.s3_import.mapping import (
    ColumnMapping,
    Role,
    check_unique_attrs,
    identity_mapping,
    parse_manifest,
)
from inflow.producers.s3_import.naming import (
    ANONYMOUS_PREFIX,
    CUSTOM_PREFIX,
    EVENT_PREFIX,
    REGISTERED_PREFIX,
    DateFormat,
    event_prefix,
)
from inflow.producers.s3_import.schedule import Schedule

MAX_EMAILS = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SECRET_FIELDS = (("secret_key",), ("pgp", "decryption_key"), ("pgp", "passphrase"))


class ImportType(StrEnum):
    REGISTERED_USERS = "registered_users"
    ANONYMOUS_USERS = "anonymous_users"
    EVENTS = "events"
    AUX_DATA = "aux_data"


class FileFormat(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"


MANDATORY_ROLES: dict[ImportType, list[tuple[set[Role], str]]] = {
    ImportType.REGISTERED_USERS: [({Role.USER_ID}, "User ID")],
    ImportType.ANONYMOUS_USERS: [({Role.ANONYMOUS_ID}, "Anonymous ID")],
    ImportType.EVENTS: [
        ({Role.USER_ID}, "User ID"),
        (
            {Role.EVENT_TIME_UTC, Role.EVENT_TIME_APP_TIMEZONE},
            "Event Time (UTC) or Event Time (App Timezone)",
        ),
    ],
    ImportType.AUX_DATA: [({Role.USER_ID}, "User ID")],
}
# With identity resolution on, a column of one of the workspace's identifiers may take User ID's place
# (§4.5: "With IR on, any configured identifier can be mapped"): registered users and events.
IDENTITY_BY_IDENTIFIER = frozenset({ImportType.REGISTERED_USERS, ImportType.EVENTS})
CUSTOMER_ID = "customer_id"
IdentifiersOf = Callable[[str], tuple[str, ...] | None]


class PgpConfig(BaseModel):
    """MoEngage's PGP settings of an import: the private decryption key, its passphrase and an optional
    public signing key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decryption_key: SecretStr
    passphrase: SecretStr = SecretStr("")
    signing_key: str | None = Field(
        None, description="ASCII-armored public key; when set, signatures are verified"
    )


class RetryPolicy(BaseModel):
    """A failed file is not retried unless configured (MoEngage never retries a failed file by itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(1, ge=1, le=30)


class ImportDefinition(BaseModel):
    """Everything about one S3 import; secrets are ``SecretStr`` in memory and encrypted at rest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^/|\s][^/|]*$")
    workspace_id: str = Field(min_length=1)
    type: ImportType
    event_name: str | None = Field(None, description="events: the Event Name (not the display name)")
    file_prefix: str | None = Field(None, description="custom file-name prefix (letters, digits, space, _)")
    bucket: str = Field(min_length=1)
    folder: str
    access_key: str = Field(min_length=1)
    secret_key: SecretStr
    region: str | None = None
    endpoint_url: str | None = None
    file_format: FileFormat = FileFormat.CSV
    date_format: DateFormat
    encrypted: bool = False
    pgp: PgpConfig | None = None
    mappings: list[ColumnMapping] = Field(default_factory=list)
    manifest: str | None = Field(None, description="uploaded manifest JSON; its mappings fill 'mappings'")
    app_timezone: str = "UTC"
    do_not_create_new_users: bool = False
    schedule: Schedule = Field(default_factory=Schedule)
    notify_emails: list[str] = Field(default_factory=list)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    created_at: AwareDatetime | None = None
    archived: bool = False
    triggered_at: AwareDatetime | None = Field(
        None, description="last run requested through the File Imports API (pollers run the import once)"
    )

    @field_validator("folder")
    @classmethod
    def _folder(cls, folder: str) -> str:
        if folder in ("", "/"):
            raise ValueError("root folders are not supported: put the files inside a folder of the bucket")
        if folder.endswith("/"):
            raise ValueError("the folder path must not include a trailing slash")
        if folder.startswith("/"):
            raise ValueError("the folder path excludes the bucket name and must not start with a slash")
        if " " in folder:
            raise ValueError("the folder path must not contain spaces")
        return folder

    @field_validator("notify_emails")
    @classmethod
    def _emails(cls, emails: list[str]) -> list[str]:
        if len(emails) > MAX_EMAILS:
            raise ValueError(f"select up to {MAX_EMAILS} emails ({len(emails)} given)")
        bad = [e for e in emails if not _EMAIL.match(e)]
        if bad:
            raise ValueError(f"not an e-mail address: {', '.join(bad)}")
        return emails

    @field_validator("app_timezone")
    @classmethod
    def _tz(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {name!r}") from exc
        return name

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.app_timezone)

    @property
    def prefix(self) -> str:
        """The file-name prefix before ``_<date>``: the given one, else MoEngage's for the import type."""
        if self.file_prefix:
            return self.file_prefix
        if self.type is ImportType.REGISTERED_USERS:
            return REGISTERED_PREFIX
        if self.type is ImportType.ANONYMOUS_USERS:
            return ANONYMOUS_PREFIX
        return event_prefix(self.event_name or "")

    @property
    def sub_type(self) -> str:
        """Import sub-type of the duplicate rule: the event name, or registered / anonymous / aux."""
        return self.event_name if self.type is ImportType.EVENTS and self.event_name else self.type.value

    def duplicate_key(self) -> tuple[str, str, str, str]:
        """As in MoEngage, type + sub-type + folder path + bucket name identify an import."""
        kind = "EVENTS" if self.type is ImportType.EVENTS else "USERS"
        if self.type is ImportType.AUX_DATA:
            kind = "AUX_DATA"
        return (kind, self.sub_type, self.folder, self.bucket)

    @property
    def identity(self) -> ColumnMapping | None:
        """The identifier column that identifies rows instead of User ID (None: User ID does)."""
        if self.type not in IDENTITY_BY_IDENTIFIER:
            return None
        return identity_mapping(self.mappings)

    def public_dict(self) -> dict[str, Any]:
        """The definition for display: secrets masked, manifest omitted."""
        return self.model_dump(mode="json", exclude={"manifest"})


def check_definition(d: ImportDefinition) -> ImportDefinition:
    """Rules that span fields; returns the definition with the manifest's mappings applied."""
    if d.type is ImportType.EVENTS and not d.event_name:
        raise DefinitionError(f"import {d.name}: an events import needs event_name")
    if d.type is ImportType.AUX_DATA and not d.file_prefix:
        raise DefinitionError(f"import {d.name}: an auxiliary data import needs file_prefix")
    if d.file_prefix and not CUSTOM_PREFIX.match(d.file_prefix):
        raise DefinitionError(
            f"import {d.name}: file_prefix may use letters, numbers, a space and '_' (max 100)"
        )
    if d.event_name and not EVENT_PREFIX.match(event_prefix(d.event_name)):
        raise DefinitionError(f"import {d.name}: event_name must be 1-100 characters without '/'")
    if d.encrypted and d.pgp is None:
        raise DefinitionError(f"import {d.name}: Decryption key is missing")
    if d.type is ImportType.AUX_DATA and d.file_format is FileFormat.NDJSON:
        raise DefinitionError(f"import {d.name}: auxiliary data imports accept CSV files only")
    mappings = list(d.mappings)
    if d.manifest:
        manifest = parse_manifest(d.manifest)
        given = {m.column for m in mappings}
        mappings += [m for m in manifest if m.column not in given]
    check_unique_attrs(mappings)
    check_mandatory(d.name, d.type, mappings)
    return d.model_copy(update={"mappings": mappings, "manifest": None})


def check_mandatory(name: str, kind: ImportType, mappings: Iterable[ColumnMapping]) -> None:
    """MoEngage's mandatory mappings of each import type, which can never be skipped."""
    mappings = list(mappings)
    for roles, label in MANDATORY_ROLES[kind]:
        found = [m for m in mappings if m.effective_role in roles]
        if Role.USER_ID in roles and kind in IDENTITY_BY_IDENTIFIER and identity_mapping(mappings):
            continue  # an identifier column identifies the rows (checked against the workspace on store)
        if not found:
            if Role.USER_ID in roles and kind in IDENTITY_BY_IDENTIFIER:
                label += " (or, in a workspace with identity resolution on, one of its identifiers mapped "
                label += "with role identifier)"
            raise DefinitionError(f"import {name}: mandatory mapping missing: {label}")
        if all(m.is_skipped for m in found):
            raise DefinitionError(
                f"import {name}: mandatory column {found[0].column!r} ({label}) cannot be skipped"
            )


def identity_identifier(d: ImportDefinition, identifiers: tuple[str, ...] | None) -> str | None:
    """The workspace identifier an import's identity column carries, or None when User ID identifies its
    rows. ``identifiers``: the workspace's identifiers (``control.workspaces``; None: unknown workspace).
    Raises :class:`DefinitionError` with the reason when the column cannot identify users there."""
    column = d.identity
    if column is None:
        return None
    attr = column.moe_attr or column.column
    where = f"import {d.name}: column {column.column!r} ({attr}) cannot identify users instead of User ID"
    if identifiers is None:
        raise DefinitionError(f"{where}: workspace {d.workspace_id} is not known (create it first)")
    others = tuple(name for name in identifiers if name != CUSTOMER_ID)
    if not others:
        raise DefinitionError(
            f"{where}: workspace {d.workspace_id} has identity resolution off (customer_id is its only "
            "identifier); map User ID, or switch an identifier on for the workspace"
        )
    name = identifier_named(attr, others)
    if name is None:
        raise DefinitionError(
            f"{where}: {attr} is not an identifier of workspace {d.workspace_id} (its identifiers: "
            f"{', '.join((CUSTOMER_ID, *others))})"
        )
    return name


def parse_definition(data: dict[str, Any], where: str = "import") -> ImportDefinition:
    """Validate a raw mapping (YAML / JSON) into a checked definition, with one line per problem."""
    try:
        definition = ImportDefinition.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(describe_validation_error(exc, where)) from exc
    return check_definition(definition)


def check_not_duplicate(new: ImportDefinition, existing: Iterable[ImportDefinition]) -> None:
    """Reject a second live import with the same type, sub-type, folder and bucket, as MoEngage does."""
    for other in existing:
        if other.name != new.name and not other.archived and other.duplicate_key() == new.duplicate_key():
            raise DefinitionError(
                f"import {new.name} is a duplicate of import {other.name}: same import type, sub-type, "
                f"S3 folder path ({new.folder}) and bucket name ({new.bucket})"
            )


def to_stored(d: ImportDefinition, box: SecretBox) -> dict[str, Any]:
    """JSON-ready dict with every secret encrypted by the secret box (never written in clear)."""
    data = d.model_dump(mode="json", exclude={"manifest"})
    raw = d.model_dump(mode="python")
    for path in SECRET_FIELDS:
        src: Any = raw
        dst: Any = data
        for part in path[:-1]:
            src, dst = src.get(part), dst.get(part)
            if src is None:
                break
        else:
            secret = src[path[-1]]
            dst[path[-1]] = box.encrypt(secret) if secret is not None else None
    return data


def from_stored(data: dict[str, Any], box: SecretBox) -> ImportDefinition:
    """Inverse of :func:`to_stored`."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for path in SECRET_FIELDS:
        node: Any = data
        for part in path[:-1]:
            node = node.get(part)
            if node is None:
                break
        else:
            value = node.get(path[-1])
            if isinstance(value, str) and SecretBox.is_encrypted(value):
                node[path[-1]] = box.decrypt(value).get_secret_value()
    return ImportDefinition.model_validate(data)


def with_created_at(d: ImportDefinition, now: datetime) -> ImportDefinition:
    return d if d.created_at else d.model_copy(update={"created_at": now})
