"""The YAML file of workspaces, imports and streams, with ``${ENV}`` references for secrets.

Unknown keys are rejected with a message naming them. Each component validates its own section with
its own model (``extra="forbid"``) through :func:`validate_section`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from inflow.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
M = TypeVar("M", bound=BaseModel)


class RateLimits(BaseModel):
    """Per-workspace ingestion limits over a 60-second window (MoEngage Bulk defaults)."""

    model_config = ConfigDict(extra="forbid")

    users_per_minute: int = Field(10_000, gt=0)
    events_per_minute: int = Field(30_000, gt=0)


class ImportLimits(BaseModel):
    """Per-workspace row budgets of file imports, per import type (MoEngage's defaults, §4.4): a file whose
    rows do not fit in what is left of the hour or the day is parked until they do."""

    model_config = ConfigDict(extra="forbid")

    users_rows_per_hour: int = Field(600_000, gt=0)
    users_rows_per_day: int = Field(14_000_000, gt=0)
    events_rows_per_hour: int = Field(5_000_000, gt=0)
    events_rows_per_day: int = Field(40_000_000, gt=0)


class FairUsageWindow(BaseModel):
    """One limit of the Fair Usage Policy: more than ``max_requests`` data records about one user within a
    window of ``seconds`` (aligned to UTC) blocks that user's tracked data for ``block_seconds``."""

    model_config = ConfigDict(extra="forbid")

    seconds: int = Field(gt=0)
    max_requests: int = Field(gt=0)
    block_seconds: int = Field(gt=0)


def _moengage_windows() -> list[FairUsageWindow]:
    """MoEngage's non-SDK limits (§2.9): 5,000 / 1 min and 10,000 / 5 min block 1 h; 50,000 / 1 h and
    100,000 / 1 day block 24 h."""
    return [
        FairUsageWindow(seconds=60, max_requests=5_000, block_seconds=3_600),
        FairUsageWindow(seconds=300, max_requests=10_000, block_seconds=3_600),
        FairUsageWindow(seconds=3_600, max_requests=50_000, block_seconds=86_400),
        FairUsageWindow(seconds=86_400, max_requests=100_000, block_seconds=86_400),
    ]


class FairUsageLimits(BaseModel):
    """The per-user Fair Usage Policy of a workspace (MoEngage's defaults; MoEngage does not let them be
    changed, Inflow does so that operators and tests can use other numbers or switch it off)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    windows: list[FairUsageWindow] = Field(default_factory=_moengage_windows, min_length=1, max_length=8)
    # The breach that makes a long block: the third in a row (a breach more than
    # ``consecutive_within_seconds`` after the previous block ended starts a new row).
    consecutive_breaches: int = Field(3, gt=0)
    long_block_seconds: int = Field(7 * 86_400, gt=0)
    consecutive_within_seconds: int = Field(86_400, ge=0)


class ProjectConfig(BaseModel):
    """One project of a portfolio workspace (MoEngage §3, §4.6): Data API calls with
    ``project_code=<code>`` and import rows whose ``moe_project_name`` is the code or the name are stored
    on ``workspace``, a workspace of its own (declared in the file or created with the CLI)."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=64)
    workspace: str = Field(min_length=1)
    name: str | None = Field(None, min_length=1, max_length=64)


class WorkspaceConfig(BaseModel):
    """A workspace declared in the file; its data API key is stored hashed by the gateway."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    api_key: SecretStr | None = None
    identifiers: list[str] = Field(default_factory=lambda: ["customer_id"], max_length=5)
    # Per identifier, values that never identify a user (MoEngage's identifier exception list, e.g. a shared
    # "test@example.com" that many users report): such a value stays an attribute and merges nobody.
    identifier_exceptions: dict[str, list[str]] = Field(default_factory=dict)
    merge_priority_attribute: str | None = None
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    import_limits: ImportLimits = Field(default_factory=ImportLimits)
    fair_usage: FairUsageLimits = Field(default_factory=FairUsageLimits)
    # A portfolio's projects; None (not declared) keeps those set with ``inflow workspaces projects``.
    projects: list[ProjectConfig] | None = None


class InflowFile(BaseModel):
    """Top level of ``inflow.yaml``."""

    model_config = ConfigDict(extra="forbid")

    workspaces: list[WorkspaceConfig] = Field(default_factory=list)
    imports: list[dict[str, Any]] = Field(default_factory=list)
    streams: list[dict[str, Any]] = Field(default_factory=list)


def expand_env(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string; a missing variable is an error."""
    env = os.environ if environ is None else environ
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} referenced in the config file is not set")

        return _ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    return value


def describe_validation_error(exc: ValidationError, where: str) -> str:
    """One line per problem, naming unknown keys explicitly."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key '{loc}'")
        else:
            lines.append(f"{where}: {loc}: {err['msg']}")
    return "\n".join(lines)


def validate_section(model: type[M], data: Mapping[str, Any], where: str) -> M:
    """Validate one section with a component's model, raising :class:`ConfigError` on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, where)) from exc


def parse_config_text(
    text: str, environ: Mapping[str, str] | None = None, where: str = "config"
) -> InflowFile:
    """Parse YAML text into :class:`InflowFile`."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    return validate_section(InflowFile, expand_env(raw, environ), where)


def load_config_file(path: Path | None, environ: Mapping[str, str] | None = None) -> InflowFile:
    """Load the file at ``path``, or the embedded defaults when ``path`` is None."""
    if path is None:
        path = Path(__file__).with_name("defaults.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    return parse_config_text(text, environ, where=str(path))
