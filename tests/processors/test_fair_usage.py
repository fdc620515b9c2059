"""The Fair Usage Policy per end user (MoEngage §2.9): the window and block rules on plain values, the
tracker over the lane state, and the lane processor rejecting a blocked user's records."""

from __future__ import annotations

import random
from typing import Any

import pytest

from inflow.config.file import FairUsageLimits, FairUsageWindow, parse_config_text
from inflow.errors import ConfigError
from inflow.processors import fair_usage as fu
from inflow.processors import growth, keys
from inflow.processors.attributes import IMPORT_SOURCE
from inflow.processors.engine import LaneProcessor
from inflow.processors.lane import outcome_of
from inflow.processors.state import State
from inflow.processors.store import TABLES
from inflow.processors.workspaces import IdentityRulesDirectory
from tests.processors import records as r
from tests.processors.conftest import WORKSPACES, Lane

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
T0 = 1_750_000_040_000  # 20 s into a minute
SMALL = fu.Policy(
    (fu.Window(MIN, 3, HOUR), fu.Window(5 * MIN, 5, HOUR), fu.Window(HOUR, 8, DAY)),
    consecutive=3,
    long_block_ms=7 * DAY,
    consecutive_within_ms=DAY,
)


def counted(policy: fu.Policy, times: list[int]) -> list[fu.Window | None]:
    tally = fu.Tally(policy)
    return [fu.count(tally, policy, at) for at in times]


# --- the rules ------------------------------------------------------------------------------------


def test_the_defaults_are_moengages_non_sdk_limits():
    policy = fu.DEFAULT_POLICY
    assert policy is not None
    assert [(w.ms, w.limit, w.block_ms) for w in policy.windows] == [
        (MIN, 5_000, HOUR),
        (5 * MIN, 10_000, HOUR),
        (HOUR, 50_000, DAY),
        (DAY, 100_000, DAY),
    ]
    assert (policy.consecutive, policy.long_block_ms) == (3, 7 * DAY)


def test_a_switched_off_policy_is_none():
    assert fu.policy_of(FairUsageLimits(enabled=False)) is None


def test_the_record_past_a_windows_limit_breaches_it():
    assert counted(SMALL, [T0] * 4) == [None, None, None, SMALL.windows[0]]


def test_a_new_window_counts_from_zero_but_longer_windows_keep_counting():
    # 3 in one minute, 3 in the next: no minute is over 3, but the 5 minutes hold 6 > 5.
    results = counted(SMALL, [T0] * 3 + [T0 + MIN] * 3)
    assert results == [None] * 5 + [SMALL.windows[1]]


def test_windows_are_aligned_to_utc_not_to_the_first_record():
    # 20 s into a minute: 3 records, then 3 more 45 s later fall into the next minute.
    assert counted(SMALL, [T0] * 3 + [T0 + 45_000] * 2) == [None] * 5


def test_when_several_windows_break_at_once_the_longest_block_is_reported():
    policy = fu.Policy((fu.Window(MIN, 2, HOUR), fu.Window(HOUR, 2, DAY)))
    assert counted(policy, [T0] * 3)[-1] == policy.windows[1]


def test_a_record_older_than_the_current_window_counts_in_it():
    tally = fu.Tally(SMALL)
    for at in (T0, T0, T0 - 2 * MIN):
        assert fu.count(tally, SMALL, at) is None
    assert fu.count(tally, SMALL, T0) == SMALL.windows[0]


def naive(policy: fu.Policy, times: list[int]) -> list[fu.Window | None]:
    """The rule said plainly: per window, the current window's index and its count."""
    current: list[list[int]] = [[-1, 0] for _ in policy.windows]
    results = []
    for at in times:
        breached = None
        for window, state in zip(policy.windows, current, strict=True):
            index = at // window.ms
            state[:] = [index, 1] if index > state[0] else [state[0], state[1] + 1]
            if state[1] > window.limit and (breached is None or window.block_ms > breached.block_ms):
                breached = window
        results.append(breached)
    return results


@pytest.mark.parametrize("seed", range(20))
def test_counting_agrees_with_the_rule_said_plainly(seed: int):
    rng = random.Random(seed)
    at, times = T0, []
    for _ in range(400):
        at += rng.choice([0, 0, 1_000, 7_000, 40_000, MIN, 4 * MIN, HOUR, -3 * MIN])
        times.append(at)
    assert counted(SMALL, times) == naive(SMALL, times)


def test_a_first_breach_blocks_for_its_windows_block_time():
    block = fu.breach(None, SMALL.windows[0], SMALL, T0)
    assert block == {"since": T0, "until": T0 + HOUR, "breaches": 1, "long": False, "limit": 3, "window": 60}
    assert fu.blocks(block, T0 + HOUR - 1)
    assert not fu.blocks(block, T0 + HOUR)


def test_the_third_breach_in_a_row_blocks_for_seven_days_and_starts_a_new_row():
    first = fu.breach(None, SMALL.windows[0], SMALL, T0)
    second = fu.breach(first, SMALL.windows[2], SMALL, first["until"] + 5 * MIN)
    third = fu.breach(second, SMALL.windows[0], SMALL, second["until"] + DAY)
    assert (second["breaches"], second["long"], second["until"] - second["since"]) == (2, False, DAY)
    assert (third["breaches"], third["long"], third["until"] - third["since"]) == (3, True, 7 * DAY)
    after = fu.breach(third, SMALL.windows[0], SMALL, third["until"] + MIN)
    assert (after["breaches"], after["long"]) == (1, False)


def test_a_breach_long_after_the_last_block_is_not_consecutive():
    first = fu.breach(None, SMALL.windows[0], SMALL, T0)
    later = fu.breach(first, SMALL.windows[0], SMALL, first["until"] + DAY + 1)
    assert later["breaches"] == 1
    assert not fu.lapsed(first, SMALL, first["until"] + DAY)
    assert fu.lapsed(first, SMALL, first["until"] + DAY + 1)


def test_the_reason_names_the_user_the_end_of_the_block_and_the_limit():
    block = fu.breach(None, SMALL.windows[0], SMALL, T0)
    assert fu.reason(block, fu.who(("customer_id", "u1"))) == (
        "Fair usage policy: user customer_id 'u1' blocked until 2025-06-15T16:07:20Z after more than 3 "
        "data requests in 1 minute"
    )
    long = dict(block, breaches=3, long=True, window=86_400, limit=100_000)
    assert fu.reason(long, "customer_id 'u1'").endswith(
        "after 3 consecutive breaches of its limits (the last: more than 100000 data requests in 1 day)"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(60, "1 minute"), (300, "5 minutes"), (3_600, "1 hour"), (86_400, "1 day"), (90, "90 seconds")],
)
def test_windows_are_described_in_words(seconds: int, text: str):
    assert fu.describe(seconds) == text


def test_the_yaml_file_overrides_a_workspaces_limits_and_rejects_unknown_keys():
    text = """
workspaces:
  - id: W
    fair_usage:
      windows: [{seconds: 60, max_requests: 5, block_seconds: 600}]
  - id: Q
    fair_usage: {enabled: false}
"""
    policies = fu.policies(parse_config_text(text).workspaces)
    assert policies["W"] == fu.Policy((fu.Window(MIN, 5, 600_000),))
    assert policies["Q"] is None
    with pytest.raises(ConfigError, match="unknown key 'workspaces.0.fair_usage.windows.0.per'"):
        parse_config_text("workspaces: [{id: W, fair_usage: {windows: [{seconds: 60, per: 1}]}}]")
    with pytest.raises(ConfigError, match="max_requests"):
        parse_config_text(
            "workspaces: [{id: W, fair_usage: {windows: [{seconds: 60, max_requests: 0, block_seconds: 1}]}}]"
        )
    assert FairUsageWindow(seconds=1, max_requests=1, block_seconds=1).seconds == 1


# --- the tracker over the lane state ----------------------------------------------------------------


def check(tracker: fu.FairUsage, user: str, at: int, ws: str = "W", partition: int = 0) -> str | None:
    reason = tracker.check(ws, f"{ws}:{user}", at, partition, ("customer_id", user))
    tracker.state.flush()
    return reason


def test_a_user_over_the_limit_is_blocked_and_others_are_not():
    tracker = fu.FairUsage(State.in_memory(), default=SMALL)
    assert [check(tracker, "a", T0) for _ in range(3)] == [None] * 3
    reason = check(tracker, "a", T0)
    assert reason is not None and "user customer_id 'a' blocked until" in reason
    assert check(tracker, "a", T0 + 30 * MIN) == reason  # blocked: the same reason, not counted
    assert [check(tracker, "b", T0) for _ in range(3)] == [None] * 3
    assert check(tracker, "a", T0 + HOUR) is None  # the block ended
    assert tracker.take_imposed() == {"W": 1}
    assert tracker.take_imposed() == {}


def test_the_block_is_stored_with_the_user_and_survives_a_restart():
    state = State.in_memory()
    tracker = fu.FairUsage(state, default=SMALL)
    for _ in range(4):
        check(tracker, "a", T0)
    stored = state.users.get(keys.fair_usage_key("W", "W:a"))
    assert stored["until"] == T0 + HOUR
    restarted = fu.FairUsage(state, default=SMALL)  # counts lost, the block is not
    assert check(restarted, "a", T0 + MIN) is not None
    assert check(restarted, "b", T0 + MIN) is None


def test_a_lapsed_block_is_deleted_from_the_state():
    state = State.in_memory()
    tracker = fu.FairUsage(state, default=SMALL)
    for _ in range(4):
        check(tracker, "a", T0)
    assert check(tracker, "a", T0 + HOUR + DAY + 1) is None
    assert state.users.get(keys.fair_usage_key("W", "W:a")) is None


def test_workspaces_have_their_own_policy_or_none():
    tracker = fu.FairUsage(State.in_memory(), {"OFF": None, "BIG": fu.DEFAULT_POLICY}, default=SMALL)
    assert [check(tracker, "a", T0, ws="OFF") for _ in range(50)] == [None] * 50
    assert [check(tracker, "a", T0, ws="BIG") for _ in range(50)] == [None] * 50
    assert [check(tracker, "a", T0, ws="OTHER") for _ in range(4)][-1] is not None


def test_the_counts_are_bounded_least_recently_seen_first():
    tracker = fu.FairUsage(State.in_memory(), default=SMALL, max_users=2)
    check(tracker, "a", T0)
    check(tracker, "b", T0)
    check(tracker, "a", T0)
    check(tracker, "c", T0)  # b goes: a was seen after it
    assert tracker.tracked == 2
    assert check(tracker, "a", T0) is None  # a kept its count: 3
    assert check(tracker, "a", T0) is not None
    assert [check(tracker, "b", T0) for _ in range(3)] == [None] * 3  # b counts from zero again


def test_revoked_partitions_forget_their_users_counts_and_a_growth_forgets_all():
    tracker = fu.FairUsage(State.in_memory(), default=SMALL)
    check(tracker, "a", T0, partition=0)
    check(tracker, "b", T0, partition=1)
    tracker.forget([1])
    assert tracker.tracked == 1
    tracker.clear()
    assert tracker.tracked == 0


def test_the_stored_block_moves_with_its_user_when_partitions_grow():
    key = keys.fair_usage_key("W", "W:a\x1fb")
    assert growth.route_of(TABLES.index("users"), key, b"{}") == "W:a\x1fb"
    assert growth.route_of(TABLES.index("users"), keys.user_key("W", "W:a"), b"{}") == "W:a"


# --- in the lane processor ----------------------------------------------------------------------------


def fed(lane: Lane, record_name: str, record: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    outputs = lane.feed(record_name, record)
    return lane.events(outputs), lane.rejected(outputs)


@pytest.fixture
def limited() -> Lane:
    lane = Lane()
    lane.processor = LaneProcessor(
        lane.state,
        IdentityRulesDirectory(WORKSPACES),
        clock=lambda: 1_800_000_000_000,
        fair_usage=fu.FairUsage(lane.state, default=SMALL),
    )
    return lane


def test_records_of_a_blocked_user_are_rejected_with_the_reason_and_others_go_through(limited: Lane):
    assert fed(limited, "UserUpsert", r.user("W", "u1"))[1] == []
    for _ in range(2):
        assert len(fed(limited, "EventRecord", r.event("W", "u1"))[0]) == 1
    events, rejected = fed(limited, "EventRecord", r.event("W", "u1"))
    assert events == []
    assert rejected[0]["reason"].startswith("Fair usage policy: user customer_id 'u1' blocked until ")
    assert rejected[0]["reason"].endswith("after more than 3 data requests in 1 minute")
    assert rejected[0]["outcome"] == "rejected"
    for name, record in (("UserUpsert", r.user("W", "u1")), ("DeviceUpsert", r.device("W", "u1", "d1"))):
        assert fed(limited, name, record)[1][0]["reason"] == rejected[0]["reason"]
    assert len(fed(limited, "EventRecord", r.event("W", "u2"))[0]) == 1


def test_duplicates_are_not_counted_and_a_blocked_record_is_applied_when_sent_after_the_block(limited: Lane):
    first = r.event("W", "u1", event_uuid="e-1")
    assert limited.processor.process("EventRecord", first, position=[0, 1, 0])[-1].topic == "events"
    limited.state.flush()
    for _ in range(4):  # upstream copies of it: dropped as duplicates, not counted
        assert limited.feed("EventRecord", dict(first)) == []
    for i in range(2):
        assert len(fed(limited, "EventRecord", r.event("W", "u1", event_uuid=f"e-{i + 2}"))[0]) == 1
    late = r.event("W", "u1", event_uuid="e-4")
    assert fed(limited, "EventRecord", late)[1]  # the breach
    again = dict(late, received_at=late["received_at"] + HOUR)
    assert len(fed(limited, "EventRecord", again)[0]) == 1  # no seen mark was left: applied now


def test_requests_about_a_blocked_user_are_not_blocked(limited: Lane):
    for _ in range(4):
        fed(limited, "EventRecord", r.event("W", "u1"))
    outputs = limited.processor.process("DeleteRequest", r.delete("W", "u1"))
    assert limited.rejected(outputs) == []
    assert [o.record["outcome"] for o in outputs if o.topic == "control.audit"] == ["ok"]


def test_a_blocked_imported_row_is_a_failed_row_with_the_reason(limited: Lane):
    """The importer's poller counts a row rejected on processors.rejected as failed (no RecordOutcome)."""
    rows = [dict(r.event("W", "u1"), source=IMPORT_SOURCE, origin=f"imp/events_1.csv/{i}") for i in range(4)]
    outputs = [limited.feed("EventRecord", row) for row in rows]
    rejected = limited.rejected(outputs[-1])
    assert [(x["origin"], x["outcome"]) for x in rejected] == [("imp/events_1.csv/3", "rejected")]
    assert rejected[0]["reason"].startswith("Fair usage policy: user customer_id 'u1' blocked until ")
    assert outcome_of("EventRecord", rows[3], outputs[-1], 0) == []
    applied = outcome_of("EventRecord", rows[0], outputs[0], 0)
    assert [(o.topic, o.record["outcome"]) for o in applied] == [("processors.outcomes", "added")]
