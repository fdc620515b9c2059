"""MoEngage's Fair Usage Policy per end user (§2.9): too many data records about one user block that user.

Every data record about a user (a ``customer``, ``device`` or event record, from the Bulk API, the Track
APIs or a file import: MoEngage counts all non-SDK sources together) is counted where that user's profile
is applied. ``ingest.records`` is keyed by user, so that is one partition on one worker, whichever gateway
process or importer wrote the record: the counts are global without any coordination between processes.

- Windows are fixed and aligned to UTC (the minute, the 5 minutes, the hour, the day), on the record's
  ``received_at`` (when the gateway received its request, or when its file's import began), so a replay
  counts the same way. Counts live in memory (bounded: the least recently seen users are forgotten first);
  a rebalance or a restart starts the windows of the moved partitions again from zero.
- A record that takes a window over its limit is rejected, and the user is blocked for the window's block
  time from that record's ``received_at``: the block is stored with the user's state (the ``users`` table,
  so in RocksDB and its changelog, and it moves with the user when ``ingest.records`` grows), so it
  survives restarts and rebalances. Records of a blocked user are rejected with the reason and not counted.
- The ``consecutive_breaches``-th breach in a row (each within ``consecutive_within_seconds`` of the end of
  the block before) blocks for ``long_block_seconds`` (7 days) instead, and starts a new row.

The functions on plain values (:func:`count`, :func:`breach`, :func:`reason`) hold the policy; the
:class:`FairUsage` tracker keeps the counts and the stored blocks, and is called once per data record from
:meth:`~inflow.processors.engine.LaneProcessor.process`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inflow.config.file import FairUsageLimits, WorkspaceConfig
from inflow.processors import keys
from inflow.processors.state import State

# The records MoEngage calls tracked data; requests about users (merge, delete, opt-out) are not counted
# and never blocked (a blocked user can still be deleted).
TRACKED = frozenset({"UserUpsert", "DeviceUpsert", "EventRecord"})
PREFIX = "Fair usage policy"
MAX_TRACKED_USERS = 100_000
Block = dict[str, Any]  # stored: since, until, breaches, long, limit, window (seconds); times in epoch ms


@dataclass(frozen=True, slots=True)
class Window:
    ms: int
    limit: int
    block_ms: int


@dataclass(frozen=True, slots=True)
class Policy:
    windows: tuple[Window, ...]
    consecutive: int = 3
    long_block_ms: int = 7 * 86_400_000
    consecutive_within_ms: int = 86_400_000


def policy_of(limits: FairUsageLimits) -> Policy | None:
    """The policy of a workspace's ``fair_usage`` settings; None when it is switched off."""
    if not limits.enabled:
        return None
    windows = tuple(Window(w.seconds * 1000, w.max_requests, w.block_seconds * 1000) for w in limits.windows)
    return Policy(
        windows,
        limits.consecutive_breaches,
        limits.long_block_seconds * 1000,
        limits.consecutive_within_seconds * 1000,
    )


DEFAULT_POLICY = policy_of(FairUsageLimits())


def policies(workspaces: Iterable[WorkspaceConfig]) -> dict[str, Policy | None]:
    """The policies of the workspaces the YAML file declares (the others have MoEngage's)."""
    return {ws.id: policy_of(ws.fair_usage) for ws in workspaces}


class Tally:
    """One user's counts in the current window of each of the policy's windows.

    A single running count ``n`` with, per window, the index of its current window and the count when it
    began (``bases``): the count in window ``i`` is ``n - bases[i]``. ``ends`` (the earliest end of the
    current windows) and ``over`` (the smallest ``n`` that takes a window over its limit) make the usual
    record one addition and two comparisons."""

    __slots__ = ("bases", "ends", "n", "over", "starts")

    def __init__(self, policy: Policy) -> None:
        self.n = 0
        self.ends = -1  # the first record recounts
        self.over = 0
        self.starts = [-1] * len(policy.windows)
        self.bases = [0] * len(policy.windows)


def count(tally: Tally, policy: Policy, at_ms: int) -> Window | None:
    """Count one record at ``at_ms``; the window it takes over its limit (the one that blocks longest when
    several do), or None. A record older than a window's current one counts in the current one."""
    tally.n += 1
    if at_ms < tally.ends and tally.n <= tally.over:
        return None
    return _recount(tally, policy, at_ms)


def _recount(tally: Tally, policy: Policy, at_ms: int) -> Window | None:
    """A window ended or a limit was passed: move the windows on and find the breach."""
    n = tally.n
    ends = over = None
    breached = None
    for i, window in enumerate(policy.windows):
        index = at_ms // window.ms
        if index > tally.starts[i]:  # this record is the first of a new window
            tally.starts[i] = index
            tally.bases[i] = n - 1
        end = (tally.starts[i] + 1) * window.ms
        ends = end if ends is None else min(ends, end)
        limit = tally.bases[i] + window.limit
        over = limit if over is None else min(over, limit)
        if n > limit and (breached is None or window.block_ms > breached.block_ms):
            breached = window
    tally.ends, tally.over = int(ends or 0), int(over or 0)
    return breached


def breach(previous: Block | None, window: Window, policy: Policy, at_ms: int) -> Block:
    """The block a breach of ``window`` at ``at_ms`` imposes, given the user's previous block."""
    row = 1
    if (
        previous is not None
        and not previous.get("long")
        and at_ms - int(previous["until"]) <= policy.consecutive_within_ms
    ):
        row = int(previous["breaches"]) + 1
    long = row >= policy.consecutive
    until = at_ms + (policy.long_block_ms if long else window.block_ms)
    return {
        "since": at_ms,
        "until": until,
        "breaches": row,
        "long": long,
        "limit": window.limit,
        "window": window.ms // 1000,
    }


def blocks(block: Block | None, at_ms: int) -> bool:
    return block is not None and at_ms < int(block["until"])


def lapsed(block: Block, policy: Policy, at_ms: int) -> bool:
    """The block ended long enough ago that a next breach starts a new row: it can be forgotten."""
    return at_ms - int(block["until"]) > policy.consecutive_within_ms


def reason(block: Block, who: str) -> str:
    """Why a blocked user's record is rejected (the same text for every record of the block)."""
    until = datetime.fromtimestamp(int(block["until"]) / 1000, UTC).isoformat(timespec="seconds")
    cause = f"more than {block['limit']} data requests in {describe(int(block['window']))}"
    if block.get("long"):
        cause = f"{block['breaches']} consecutive breaches of its limits (the last: {cause})"
    return f"{PREFIX}: user {who} blocked until {until.replace('+00:00', 'Z')} after {cause}"


def who(named: tuple[str, str]) -> str:
    return f"{named[0]} {named[1]!r}"


def describe(seconds: int) -> str:
    """``1 minute``, ``5 minutes``, ``1 hour``, ``1 day``, ``90 seconds``."""
    for size, unit in ((86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second")):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}" if n == 1 else f"{n} {unit}s"
    return f"{seconds} seconds"  # pragma: no cover - every whole number of seconds divides by 1


class _User:
    """One user's counts, its stored block (read once), and the partition it lives on."""

    __slots__ = ("block", "partition", "tally", "why")

    def __init__(self, partition: int, block: Block | None, tally: Tally) -> None:
        self.partition = partition
        self.block = block
        self.tally = tally
        self.why: str | None = None  # the block's reason, made once for all its records


class FairUsage:
    """The counts and blocks of the users of the partitions one worker applies.

    ``policies``: per workspace, its policy (None: switched off); other workspaces have ``default``."""

    def __init__(
        self,
        state: State,
        policies: Mapping[str, Policy | None] | None = None,
        default: Policy | None = DEFAULT_POLICY,
        max_users: int = MAX_TRACKED_USERS,
    ) -> None:
        self.state = state
        self.policies = dict(policies or {})
        self.default = default
        self.max_users = max_users
        self._users: OrderedDict[tuple[str, str], _User] = OrderedDict()
        self.imposed: dict[str, int] = {}  # blocks imposed per workspace, since the metrics last took them

    def check(self, ws: str, slot: str, at_ms: int, partition: int, named: tuple[str, str]) -> str | None:
        """Count a data record about the user at ``slot`` (``named`` by the record's first identifier); the
        reason to reject it, or None to apply it. A new block is written to the state with the record (the
        caller must not discard its writes)."""
        policy = self.policies.get(ws, self.default)
        if policy is None:
            return None
        user = self._users.get((ws, slot))
        if user is None:
            user = self._track(ws, slot, partition, policy)
        else:
            self._users.move_to_end((ws, slot))
        block = user.block
        if block is not None:
            if blocks(block, at_ms):
                if user.why is None:
                    user.why = reason(block, who(named))
                return user.why
            if lapsed(block, policy, at_ms):
                user.block = None
                self.state.users.delete(keys.fair_usage_key(ws, slot))
        window = count(user.tally, policy, at_ms)
        if window is None:
            return None
        user.block = block = breach(user.block, window, policy, at_ms)
        user.why = reason(block, who(named))
        self.state.users.put(keys.fair_usage_key(ws, slot), block)
        self.imposed[ws] = self.imposed.get(ws, 0) + 1
        return user.why

    def _track(self, ws: str, slot: str, partition: int, policy: Policy) -> _User:
        stored = self.state.users.get(keys.fair_usage_key(ws, slot))
        user = _User(partition, stored if isinstance(stored, dict) else None, Tally(policy))
        self._users[(ws, slot)] = user
        if len(self._users) > self.max_users:
            self._users.popitem(last=False)
        return user

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked from this worker: their users' counts go (their new owner starts again)."""
        gone = set(partitions)
        if gone:
            for key in [k for k, user in self._users.items() if user.partition in gone]:
                del self._users[key]

    def clear(self) -> None:
        """``ingest.records`` grew: users may live on other partitions now."""
        self._users.clear()

    def take_imposed(self) -> dict[str, int]:
        imposed, self.imposed = self.imposed, {}
        return imposed

    @property
    def tracked(self) -> int:
        return len(self._users)
