"""Workspace credentials: durable in the compacted ``control.workspaces`` topic, followed by every gateway.

The YAML file's ``workspaces`` are the starting point: a declared workspace missing from the topic is
created with the file's key (hashed), and its identifiers and rate limits follow the file, and so do a
portfolio's projects when the file declares them (``portfolio.py`` holds their rules). Keys are changed
only by ``inflow workspaces rotate-key``; every gateway sees the new credential within its follow latency.

Reading goes through :class:`~inflow.kafka.view.CompactedView` (followed live by the gateway and the
workers, read once to its end by the CLI); writing through
:meth:`~inflow.kafka.producer.KafkaProducer.publish_and_wait`, so a change is acknowledged by the broker
before it is applied locally.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message

from inflow.config.file import WorkspaceConfig
from inflow.config.settings import KafkaSettings
from inflow.kafka.errors import KafkaFault
from inflow.kafka.producer import KafkaProducer
from inflow.kafka.view import CompactedView
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.exceptions import WorkspaceError, WorkspaceNotFound
from inflow.workspaces.keys import hash_key
from inflow.workspaces.portfolio import Project, check_projects, find_project

TOPIC = "control.workspaces"
RECORD = "WorkspaceCredential"
MISSING_TOPIC_WAIT_S = 5.0  # how long a CLI read waits for a topic that does not exist (yet)


@dataclass(frozen=True, slots=True)
class Workspace:
    """One workspace's credential and limits as the gateway uses them."""

    id: str
    key_hash: str
    key_version: int = 1
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    rotated_at: datetime | None = None
    disabled: bool = False
    identifiers: tuple[str, ...] = ()
    users_per_minute: int = 10_000
    events_per_minute: int = 30_000
    projects: tuple[Project, ...] = ()  # a portfolio's projects (portfolio.py); empty: not a portfolio

    @property
    def limits(self) -> dict[str, int]:
        return {"users": self.users_per_minute, "events": self.events_per_minute}

    @property
    def is_portfolio(self) -> bool:
        return bool(self.projects)

    def project(self, code: str) -> Project | None:
        """The project of this portfolio whose code is exactly ``code``, or None."""
        return find_project(self.projects, code)

    def to_record(self) -> dict[str, Any]:
        return {
            "workspace_id": self.id,
            "key_hash": self.key_hash,
            "key_version": self.key_version,
            "created_at": self.created_at,
            "rotated_at": self.rotated_at,
            "disabled": self.disabled,
            "identifiers": list(self.identifiers),
            "users_per_minute": self.users_per_minute,
            "events_per_minute": self.events_per_minute,
            "projects": [p.to_record() for p in self.projects],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Workspace:
        return cls(
            id=record["workspace_id"],
            key_hash=record["key_hash"],
            key_version=record["key_version"],
            created_at=record["created_at"],
            rotated_at=record["rotated_at"],
            disabled=record["disabled"],
            identifiers=tuple(record["identifiers"]),
            users_per_minute=record["users_per_minute"],
            events_per_minute=record["events_per_minute"],
            projects=tuple(Project.from_record(p) for p in record.get("projects") or ()),
        )

    def public(self) -> dict[str, Any]:
        """Everything but the hash, for listings."""
        return {
            "workspace_id": self.id,
            "key_set": bool(self.key_hash),
            "key_version": self.key_version,
            "created_at": self.created_at.isoformat(),
            "rotated_at": self.rotated_at.isoformat() if self.rotated_at else None,
            "disabled": self.disabled,
            "identifiers": list(self.identifiers),
            "users_per_minute": self.users_per_minute,
            "events_per_minute": self.events_per_minute,
            "projects": [p.to_record() for p in self.projects],
        }


def from_config(cfg: WorkspaceConfig) -> Workspace:
    """A new credential for a workspace declared in the YAML file (no key: 409 until one is set)."""
    key = cfg.api_key.get_secret_value() if cfg.api_key else ""
    return Workspace(
        id=cfg.id,
        key_hash=hash_key(key) if key else "",
        identifiers=tuple(i for i in cfg.identifiers if i != "customer_id"),
        users_per_minute=cfg.rate_limits.users_per_minute,
        events_per_minute=cfg.rate_limits.events_per_minute,
    )


MAX_IDENTIFIERS = 5  # customer_id included, as in MoEngage


def new_workspace(
    workspace_id: str,
    key: str,
    identifiers: list[str] | tuple[str, ...] = (),
    users_per_minute: int = 10_000,
    events_per_minute: int = 30_000,
) -> Workspace:
    """A workspace to create (``inflow workspaces create``, the admin API), its key hashed; bad values are a
    :class:`WorkspaceError` with the reason."""
    if (
        not workspace_id
        or len(workspace_id) > 64
        or not workspace_id.isprintable()
        or any(c in workspace_id for c in " :/?#%")
    ):
        raise WorkspaceError(
            f"workspace id {workspace_id!r} must be 1-64 printable characters without spaces or : / ? # %"
        )
    if not key:
        raise WorkspaceError("the data API key must not be empty")
    names = tuple(i.strip() for i in identifiers if i.strip() and i.strip() != "customer_id")
    if len(names) > MAX_IDENTIFIERS - 1:
        raise WorkspaceError(f"at most {MAX_IDENTIFIERS} identifiers including customer_id")
    check_limits(users_per_minute, events_per_minute)
    return Workspace(
        id=workspace_id,
        key_hash=hash_key(key),
        identifiers=names,
        users_per_minute=users_per_minute,
        events_per_minute=events_per_minute,
    )


def check_limits(users_per_minute: int, events_per_minute: int) -> None:
    for name, value in (("users_per_minute", users_per_minute), ("events_per_minute", events_per_minute)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WorkspaceError(f"{name} must be a whole number of at least 1, not {value!r}")


class WorkspaceRegistry:
    """In-memory view of ``control.workspaces``, with writes that go through the topic."""

    def __init__(self, kafka: KafkaSettings, serde: AvroSerde) -> None:
        self.kafka = kafka
        self.serde = serde
        self.topic = kafka.topic(TOPIC)
        self._encode = serde.encoder(RECORD, topic=self.topic)
        self._workspaces: dict[str, Workspace] = {}
        self._lock = threading.Lock()
        self.view: CompactedView | None = None
        self._producer: KafkaProducer | None = None

    # reading -------------------------------------------------------------------------------------------
    def _apply(self, msg: Message) -> None:
        """Apply one topic record; a tombstone removes the workspace."""
        key, value = msg.key(), msg.value()
        if value is None:
            if key is not None:
                with self._lock:
                    self._workspaces.pop(key.decode(), None)
            return
        _, record = self.serde.decode(value, expected=RECORD)
        workspace = Workspace.from_record(record)
        with self._lock:
            self._workspaces[workspace.id] = workspace

    def start(self) -> WorkspaceRegistry:
        """Follow the topic on a thread of its own (gateway, workers); ``ready`` once read to its end."""
        self.view = CompactedView(self.kafka, self.topic, apply=self._apply, name="workspaces").start()
        return self

    def stop(self) -> None:
        """Stop following and release the producer of :meth:`publish`."""
        if self.view:
            self.view.stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

    def load(self, timeout: float = 30.0) -> WorkspaceRegistry:
        """Read the topic once to its end (CLI); a missing topic fails within seconds, naming the command
        that creates it (``inflow topics create``)."""
        view = CompactedView(self.kafka, self.topic, apply=self._apply, name="workspaces")
        try:
            view.open(min(timeout, MISSING_TOPIC_WAIT_S)).catch_up(timeout)
        except KafkaFault as exc:
            raise WorkspaceError(f"cannot read {self.topic}: {exc}") from exc
        finally:
            view.close()
        return self

    @property
    def ready(self) -> bool:
        return self.view is not None and self.view.ready.is_set()

    @property
    def problem(self) -> str | None:
        """Why the credentials are not (yet) readable; None once the topic was read to its end."""
        return self.view.problem if self.view is not None else "not started"

    def wait_ready(self, timeout: float) -> bool:
        return self.view is not None and self.view.wait_ready(timeout)

    def get(self, workspace_id: str) -> Workspace | None:
        return self._workspaces.get(workspace_id)

    def all(self) -> list[Workspace]:
        with self._lock:
            return sorted(self._workspaces.values(), key=lambda w: w.id)

    def portfolio_of(self, workspace_id: str, exclude: str | None = None) -> str | None:
        """The portfolio that lists ``workspace_id`` as a project (``exclude`` aside), or None."""
        for ws in self.all():
            if ws.id != exclude and any(p.workspace_id == workspace_id for p in ws.projects):
                return ws.id
        return None

    # writing -------------------------------------------------------------------------------------------
    def publish(self, workspace: Workspace, timeout: float = 15.0) -> Workspace:
        """Write a credential and wait for the broker's acknowledgement; then apply it locally."""
        if self._producer is None:
            timeouts: dict[str, Any] = {"message.timeout.ms": int(timeout * 1000)}
            self._producer = KafkaProducer(self.kafka, name="workspaces", **timeouts)
        value = self._encode(workspace.to_record())
        try:
            self._producer.publish_and_wait(self.topic, workspace.id.encode(), value, timeout)
        except KafkaFault as exc:
            raise WorkspaceError(f"cannot store workspace {workspace.id} in {self.topic}: {exc}") from exc
        with self._lock:
            self._workspaces[workspace.id] = workspace
        return workspace

    def seed(self, configs: list[WorkspaceConfig]) -> list[str]:
        """Create declared workspaces that are missing; align identifiers and limits with the file; then
        the projects of the portfolios that declare ``projects`` (once every workspace exists)."""
        changed = []
        for cfg in configs:
            current = self.get(cfg.id)
            wanted = from_config(cfg)
            if current is None:
                self.publish(wanted)
                changed.append(cfg.id)
                continue
            aligned = replace(
                current,
                identifiers=wanted.identifiers,
                users_per_minute=wanted.users_per_minute,
                events_per_minute=wanted.events_per_minute,
            )
            if not current.key_hash and wanted.key_hash:
                aligned = replace(aligned, key_hash=wanted.key_hash)
            if aligned != current:
                self.publish(aligned)
                changed.append(cfg.id)
        for cfg in configs:
            if cfg.projects is None:  # not declared: the projects set by the CLI stay
                continue
            wanted_projects = tuple(
                Project(code=p.code, workspace_id=p.workspace, name=p.name) for p in cfg.projects
            )
            if self._existing(cfg.id).projects != wanted_projects:
                self.set_projects(cfg.id, wanted_projects)
                if cfg.id not in changed:
                    changed.append(cfg.id)
        return changed

    def create(self, workspace: Workspace) -> Workspace:
        if self.get(workspace.id) is not None:
            raise WorkspaceError(f"workspace {workspace.id} already exists; use rotate-key to change its key")
        return self.publish(workspace)

    def rotate_key(self, workspace_id: str, new_key: str) -> Workspace:
        current = self._existing(workspace_id)
        return self.publish(
            replace(
                current,
                key_hash=hash_key(new_key),
                key_version=current.key_version + 1,
                rotated_at=datetime.now(UTC),
            )
        )

    def set_disabled(self, workspace_id: str, disabled: bool) -> Workspace:
        return self.publish(replace(self._existing(workspace_id), disabled=disabled))

    def set_limits(self, workspace_id: str, users_per_minute: int, events_per_minute: int) -> Workspace:
        """Change a workspace's rate limits; every gateway applies them within its follow latency."""
        check_limits(users_per_minute, events_per_minute)
        current = self._existing(workspace_id)
        return self.publish(
            replace(current, users_per_minute=users_per_minute, events_per_minute=events_per_minute)
        )

    def set_projects(self, portfolio_id: str, projects: tuple[Project, ...]) -> Workspace:
        """Make a workspace a portfolio of these projects (none: an ordinary workspace again); a list that
        would make routing ambiguous or circular is a :class:`WorkspaceError` naming the fault."""
        current = self._existing(portfolio_id)

        def projects_of(workspace_id: str) -> tuple[Project, ...]:
            ws = self.get(workspace_id)
            return ws.projects if ws is not None else ()

        check_projects(
            portfolio_id,
            projects,
            lambda workspace_id: self.get(workspace_id) is not None,
            projects_of,
            lambda workspace_id: self.portfolio_of(workspace_id, exclude=portfolio_id),
        )
        return self.publish(replace(current, projects=tuple(projects)))

    def add_project(self, portfolio_id: str, project: Project) -> Workspace:
        """Add one project to a portfolio (the workspace becomes a portfolio with its first project)."""
        current = self._existing(portfolio_id)
        if current.project(project.code) is not None:
            raise WorkspaceError(f"portfolio {portfolio_id} already has a project {project.code}")
        return self.set_projects(portfolio_id, (*current.projects, project))

    def remove_project(self, portfolio_id: str, code: str) -> Workspace:
        """Remove a project from a portfolio; its workspace and data stay."""
        current = self._existing(portfolio_id)
        if current.project(code) is None:
            raise WorkspaceError(f"portfolio {portfolio_id} has no project {code}")
        return self.set_projects(portfolio_id, tuple(p for p in current.projects if p.code != code))

    def _existing(self, workspace_id: str) -> Workspace:
        current = self.get(workspace_id)
        if current is None:
            raise WorkspaceNotFound(f"workspace {workspace_id} does not exist")
        return current
