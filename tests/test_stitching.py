"""Identity stitching (docs/identity.md, spec section 3): stories, then a property test
against the plain-Python reference (tests/identity_reference.py)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cdp_warehouse.collect.messages import landing_row
from cdp_warehouse.errors import SpecError
from cdp_warehouse.runner import run as run_project
from cdp_warehouse.specs import load_project
from tests import reference as ref
from tests.compiler import test_matches_reference as tm
from tests.conftest import AS_OF, MINIMAL_CDP_YAML, Workspace, identify, page, track, write_project
from tests.identity_reference import priority_of, profile_id_of, stitch

PROJECT = """
traits:
  - name: n_all
    count: {event: "*"}
  - name: mids
    sql: {sql: "string_agg(message_id, ',' ORDER BY message_id)"}
"""

# The package keeps stitching behind `identity.stitch` (default off, unlike docs/identity.md:
# see test_cdp_run_stitches_by_default); the stories opt in to exercise the stitching itself.
STITCH_CDP_YAML = MINIMAL_CDP_YAML + """\
identity:
  stitch: true
"""

PHONE_CDP_YAML = MINIMAL_CDP_YAML + """\
identity:
  stitch: true
  identifiers:
    - user_id
    - email
    - anonymous_id
    - {name: phone, path: context.traits.phone}
"""

ANONYMOUS_FIRST_CDP_YAML = MINIMAL_CDP_YAML + """\
identity:
  stitch: true
  identifiers:
    - user_id
    - anonymous_id
    - email
    - {name: phone, path: context.traits.phone}
"""


def pid(kind: str, value: str) -> str:
    return profile_id_of((kind, value))


def user(value: str) -> str:
    return pid("user_id", value)


def anon(value: str) -> str:
    return pid("anonymous_id", value)


def alias(user_id: str, previous_id: str, at: str, message_id: str | None = None, **fields: Any) -> dict:
    alias.counter += 1
    return {"type": "alias", "messageId": message_id or f"al{alias.counter}", "userId": user_id,
            "previousId": previous_id, "timestamp": at, **fields}


alias.counter = 0


def with_context(message: dict, **traits: Any) -> dict:
    """The message with ``context.traits`` (email, phone, …)."""
    return {**message, "context": {"traits": traits}}


def with_id(message: dict, message_id: str) -> dict:
    return {**message, "messageId": message_id}


def identity_map(ws: Workspace) -> dict[tuple[str, str], str]:
    rows = ws.query("SELECT identifier_type, identifier, profile_id FROM cdp.identity_map")
    out = {(kind, value): profile_id for kind, value, profile_id in rows}
    assert len(out) == len(rows), "an identifier appears twice in identity_map"
    return out


def counts(ws: Workspace) -> dict[str, int]:
    return {profile_id: row["n_all"] for profile_id, row in ws.traits().items()}


def message_ids(ws: Workspace) -> dict[str, set[str]]:
    """profile_id → ids of its track/page/screen messages."""
    return {profile_id: set(row["mids"].split(",")) if row["mids"] else set()
            for profile_id, row in ws.traits().items()}


def landed(messages: list[dict]) -> list[dict]:
    """The landed rows of ``messages`` as the reference reads them (first copy of an id wins)."""
    rows: dict[str, dict] = {}
    for message in messages:
        row = landing_row(message, source="test", now=datetime(2026, 7, 1))
        if row["message_id"] in rows:
            continue
        for key in ("traits", "context", "properties"):
            row[key] = None if row[key] is None else json.loads(row[key])
        rows[row["message_id"]] = row
    return list(rows.values())


# ------------------------------------------------------------------ the default


def test_cdp_run_stitches_when_enabled(workspace):
    """docs/identity.md: with `identity: {stitch: true}`, `cdp run` applies the rules and
    writes cdp.identity_map; the anonymous browsing joins the user."""
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(
        track(None, "Browsed", "2026-06-01T00:00:00Z", anonymous="tablet"),
        identify("alice", "2026-06-02T00:00:00Z", anonymous="tablet"),
    )
    ws.run()
    assert counts(ws) == {user("alice"): 1}
    assert identity_map(ws) == {("user_id", "alice"): user("alice"), ("anonymous_id", "tablet"): user("alice")}


def test_without_stitching_a_profile_is_coalesce_user_id_anonymous_id(workspace):
    ws = workspace(PROJECT)
    ws.land(
        track(None, "Browsed", "2026-06-01T00:00:00Z", anonymous="tablet"),
        identify("alice", "2026-06-02T00:00:00Z", anonymous="tablet"),
    )
    ws.run()
    assert counts(ws) == {"alice": 0, "tablet": 1}


# ------------------------------------------------------------------ alias chains


def test_a_chain_of_1000_aliases_converges_into_one_profile(workspace):
    """u0000 ← u0001 ← … ← u1000, aliased in a shuffled order: one account, keyed by the
    earliest user id, holding every message."""
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    users = [f"u{i:04d}" for i in range(1001)]
    start = datetime(2026, 6, 1)
    tracks = [track(u, "Seen", (start + timedelta(seconds=i)).isoformat() + "Z") for i, u in enumerate(users)]
    order = list(range(1000))
    random.Random(7).shuffle(order)
    aliases = [alias(users[i + 1], users[i], (start + timedelta(days=5, seconds=n)).isoformat() + "Z")
               for n, i in enumerate(order)]
    ws.land(*aliases, *tracks)
    ws.run()

    mapping = identity_map(ws)
    assert mapping == {("user_id", u): user("u0000") for u in users}
    assert counts(ws) == {user("u0000"): 1001}
    assert ws.query("SELECT profile_id, user_id FROM cdp.profiles") == [(user("u0000"), "u0000")]


def test_an_alias_from_an_anonymous_id_links_browsing_before_signup(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(
        page(None, "Home", "2026-06-01T00:00:00Z", anonymous="a1"),
        page(None, "Pricing", "2026-06-02T00:00:00Z", anonymous="a1"),
        alias("u1", "a1", "2026-06-03T00:00:00Z"),
        track("u1", "Signed Up", "2026-06-03T00:01:00Z"),
    )
    ws.run()
    assert identity_map(ws) == {("user_id", "u1"): user("u1"), ("anonymous_id", "a1"): user("u1")}
    assert counts(ws) == {user("u1"): 3}


def test_an_alias_joins_two_user_ids_and_the_earliest_names_the_profile(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(
        track("old", "A", "2026-06-01T00:00:00Z"),
        track("new", "B", "2026-06-05T00:00:00Z"),
        alias("new", "old", "2026-06-06T00:00:00Z"),
    )
    ws.run()
    assert identity_map(ws) == {("user_id", "old"): user("old"), ("user_id", "new"): user("old")}
    assert ws.query("SELECT profile_id, user_id FROM cdp.profiles") == [(user("old"), "old")]


# ------------------------------------------------------------------ email links


def test_email_links_anonymous_browsing_to_the_known_user(workspace):
    """An anonymous visitor gives an email (no user id yet); later the user identifies with
    the same email on another device: the browsing counts in the user's traits."""
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(
        page(None, "Home", "2026-06-01T00:00:00Z", anonymous="a1"),
        track(None, "Viewed", "2026-06-02T00:00:00Z", anonymous="a1"),
        identify(None, "2026-06-03T00:00:00Z", anonymous="a1", email="  Ann@Example.COM "),
        identify("u1", "2026-06-05T00:00:00Z", anonymous="a2", email="ann@example.com"),
        track("u1", "Bought", "2026-06-06T00:00:00Z", anonymous="a2"),
    )
    ws.run()
    assert identity_map(ws) == {
        ("user_id", "u1"): user("u1"),
        ("anonymous_id", "a1"): user("u1"),
        ("anonymous_id", "a2"): user("u1"),
        ("email", "ann@example.com"): user("u1"),
    }
    assert counts(ws) == {user("u1"): 3}


def test_context_traits_email_links_any_call_and_group_traits_do_not(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", email="ann@example.com"),
        with_context(track(None, "Viewed", "2026-06-02T00:00:00Z", anonymous="a1"), email="ANN@example.com"),
        # a group call's traits describe the account: its email is no identifier of u2
        {"type": "group", "messageId": "g1", "userId": "u2", "groupId": "acme",
         "traits": {"email": "billing@acme.com"}, "timestamp": "2026-06-01T00:00:00Z"},
        with_context(track(None, "Viewed", "2026-06-03T00:00:00Z", anonymous="a2"), email="billing@acme.com"),
    )
    ws.run()
    assert identity_map(ws) == {
        ("user_id", "u1"): user("u1"),
        ("email", "ann@example.com"): user("u1"),
        ("anonymous_id", "a1"): user("u1"),
        ("user_id", "u2"): user("u2"),
        ("email", "billing@acme.com"): anon("a2"),
        ("anonymous_id", "a2"): anon("a2"),
    }
    assert counts(ws) == {user("u1"): 1, user("u2"): 0, anon("a2"): 1}


def test_an_anonymous_only_profile_is_keyed_by_its_earliest_anonymous_id(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(
        identify(None, "2026-06-02T00:00:00Z", anonymous="phone-app", email="x@y.io"),
        track(None, "Viewed", "2026-06-01T00:00:00Z", anonymous="web"),
        identify(None, "2026-06-03T00:00:00Z", anonymous="web", email="x@y.io"),
    )
    ws.run()
    key = anon("web")  # web's first message (06-01) precedes phone-app's (06-02)
    assert identity_map(ws) == {("anonymous_id", "web"): key, ("anonymous_id", "phone-app"): key,
                                ("email", "x@y.io"): key}
    assert ws.query("SELECT profile_id, user_id FROM cdp.profiles") == [(key, None)]


def test_custom_identifiers_are_trimmed_and_empty_ones_ignored(workspace):
    ws = workspace(PROJECT, PHONE_CDP_YAML)
    ws.land(
        with_context(track(None, "Viewed", "2026-06-01T00:00:00Z", anonymous="a1"), phone=" +1 555 "),
        with_context(track(None, "Viewed", "2026-06-02T00:00:00Z", anonymous="a2"), phone="+1 555"),
        with_context(track(None, "Viewed", "2026-06-03T00:00:00Z", anonymous="a3"), phone="", email=""),
    )
    ws.run()
    assert identity_map(ws) == {("anonymous_id", "a1"): anon("a1"), ("anonymous_id", "a2"): anon("a1"),
                                ("phone", "+1 555"): anon("a1"), ("anonymous_id", "a3"): anon("a3")}


# ------------------------------------------------------------------ shared devices, shared emails


def test_a_shared_device_stays_with_the_user_first_seen_on_it(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(
        track(None, "Browsed", "2026-06-01T00:00:00Z", anonymous="tablet"),
        identify("alice", "2026-06-02T00:00:00Z", anonymous="tablet"),
        track("alice", "Read", "2026-06-03T00:00:00Z", anonymous="tablet"),
        identify("bob", "2026-06-04T00:00:00Z", anonymous="tablet"),
        track("bob", "Read", "2026-06-05T00:00:00Z", anonymous="tablet"),
        track(None, "Browsed", "2026-06-06T00:00:00Z", anonymous="tablet"),
    )
    ws.run()
    assert identity_map(ws) == {
        ("user_id", "alice"): user("alice"),
        ("anonymous_id", "tablet"): user("alice"),
        ("user_id", "bob"): user("bob"),
    }
    # alice: her track and both anonymous-only events; bob: his own track only
    assert counts(ws) == {user("alice"): 3, user("bob"): 1}
    assert dict(ws.query("SELECT profile_id, user_id FROM cdp.profiles")) == {user("alice"): "alice", user("bob"): "bob"}


def test_an_email_used_by_two_accounts_stays_with_the_first(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(
        identify("u2", "2026-06-02T00:00:00Z", email="TEAM@acme.com"),
        identify("u1", "2026-06-01T00:00:00Z", email="team@acme.com "),
        with_context(track(None, "Viewed", "2026-06-03T00:00:00Z", anonymous="a9"), email="team@acme.com"),
        with_context(track("u2", "Viewed", "2026-06-04T00:00:00Z"), email="team@acme.com"),
    )
    ws.run()
    assert identity_map(ws) == {
        ("user_id", "u1"): user("u1"),
        ("user_id", "u2"): user("u2"),
        ("email", "team@acme.com"): user("u1"),
        ("anonymous_id", "a9"): user("u1"),  # floating, joins the email's owner
    }
    assert counts(ws) == {user("u1"): 1, user("u2"): 1}


def test_an_alias_does_not_take_an_anonymous_id_owned_by_another_account(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", anonymous="a1"),
        alias("u2", "a1", "2026-06-02T00:00:00Z"),
        track(None, "Viewed", "2026-06-03T00:00:00Z", anonymous="a1"),
    )
    ws.run()
    assert identity_map(ws) == {("user_id", "u1"): user("u1"), ("user_id", "u2"): user("u2"),
                                ("anonymous_id", "a1"): user("u1")}
    assert counts(ws) == {user("u1"): 1, user("u2"): 0}


# ------------------------------------------------------------------ ties and priority


def test_ties_in_time_go_to_the_smaller_message_id(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    at = "2026-06-01T00:00:00Z"
    ws.land(  # landed in the opposite order of their message ids
        with_id(identify("u2", at, anonymous="shared"), "m-b"),
        with_id(identify("u1", at, anonymous="shared"), "m-a"),
        track(None, "Viewed", "2026-06-02T00:00:00Z", anonymous="shared"),
    )
    ws.run()
    assert identity_map(ws)[("anonymous_id", "shared")] == user("u1")
    assert counts(ws) == {user("u1"): 1, user("u2"): 0}


def test_a_floating_group_joins_by_the_earliest_message_ties_by_message_id(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    at = "2026-06-02T00:00:00Z"
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", email="one@x.io"),
        identify("u2", "2026-06-01T00:00:00Z", email="two@x.io"),
        with_id(with_context(track(None, "V", at, anonymous="a1"), email="two@x.io"), "n-2"),
        with_id(with_context(track(None, "V", at, anonymous="a1"), email="one@x.io"), "n-1"),
        with_id(track(None, "V", "2026-06-03T00:00:00Z", anonymous="a1"), "n-3"),
    )
    ws.run()
    mapping = identity_map(ws)
    assert mapping[("anonymous_id", "a1")] == user("u1")
    # message n-2 goes by its email (higher priority than the anonymous id) to u2
    assert message_ids(ws) == {user("u1"): {"n-1", "n-3"}, user("u2"): {"n-2"}}


@pytest.mark.parametrize(("cdp_yaml", "owner"), [(PHONE_CDP_YAML, "u2"), (ANONYMOUS_FIRST_CDP_YAML, "u1")])
def test_the_owned_identifier_of_highest_priority_decides_a_join(workspace, cdp_yaml, owner):
    """A phone never seen with a user id comes with u1's device and u2's email: the identifier
    type listed first in identity.identifiers decides where the phone (and the message) goes."""
    ws = workspace(PROJECT, cdp_yaml)
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", anonymous="a1"),
        identify("u2", "2026-06-01T00:00:00Z", email="two@x.io"),
        with_id(with_context(track(None, "V", "2026-06-02T00:00:00Z", anonymous="a1"),
                             email="two@x.io", phone=" 555-0100 "), "x1"),
        with_id(with_context(track(None, "V", "2026-06-03T00:00:00Z", anonymous="a7"), phone="555-0100"), "x2"),
    )
    ws.run()
    mapping = identity_map(ws)
    assert mapping[("phone", "555-0100")] == user(owner)
    assert mapping[("anonymous_id", "a7")] == user(owner)  # floating with the phone
    assert mapping[("anonymous_id", "a1")] == user("u1")
    assert mapping[("email", "two@x.io")] == user("u2")
    assert message_ids(ws)[user(owner)] == {"x1", "x2"}


# ------------------------------------------------------------------ merge protection


def test_two_user_ids_never_merge_without_an_alias(workspace):
    ws = workspace(PROJECT, PHONE_CDP_YAML)
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", anonymous="d", email="same@x.io"),
        with_context(identify("u2", "2026-06-02T00:00:00Z", anonymous="d", email="same@x.io"), phone="1"),
        with_context(track("u1", "A", "2026-06-03T00:00:00Z", anonymous="d2"), phone="1", email="same@x.io"),
        with_context(track(None, "A", "2026-06-04T00:00:00Z", anonymous="d2"), email="same@x.io"),
        track("u2", "A", "2026-06-05T00:00:00Z", anonymous="d"),
    )
    ws.run()
    mapping = identity_map(ws)
    assert mapping[("user_id", "u1")] != mapping[("user_id", "u2")]
    assert mapping == {
        ("user_id", "u1"): user("u1"), ("user_id", "u2"): user("u2"),
        ("anonymous_id", "d"): user("u1"), ("email", "same@x.io"): user("u1"),
        ("phone", "1"): user("u2"), ("anonymous_id", "d2"): user("u1"),
    }
    assert ws.query("SELECT count(*) FROM cdp.profiles") == [(2,)]
    assert counts(ws) == {user("u1"): 2, user("u2"): 1}


# ------------------------------------------------------------------ limits (rule 4b)


def test_an_email_limit_of_one_keeps_a_users_first_email(workspace):
    """u1 changes email: with `limits: {email: 1}` the profile keeps old@x.io; new@x.io is a
    profile of its own, and anonymous-only messages carrying it go there (rule 5: email
    ranks before anonymous_id)."""
    ws = workspace(PROJECT, STITCH_CDP_YAML + "  limits: {user_id: 1, email: 1}\n")
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", anonymous="a1", email="old@x.io"),
        identify("u1", "2026-06-05T00:00:00Z", anonymous="a1", email="New@x.io"),
        with_id(with_context(track(None, "V", "2026-06-06T00:00:00Z", anonymous="a2"), email="new@x.io"), "n1"),
        with_id(track(None, "V", "2026-06-07T00:00:00Z", anonymous="a1"), "n2"),
        with_id(track("u1", "V", "2026-06-08T00:00:00Z"), "n3"),
        with_id(with_context(track(None, "V", "2026-06-09T00:00:00Z", anonymous="a1"), email="old@x.io"), "n4"),
    )
    ws.run()
    assert identity_map(ws) == {
        ("user_id", "u1"): user("u1"),
        ("anonymous_id", "a1"): user("u1"),
        ("email", "old@x.io"): user("u1"),
        ("email", "new@x.io"): "email:new@x.io",
        # joined u1 through new@x.io by rule 4; the detached email leaves alone
        ("anonymous_id", "a2"): user("u1"),
    }
    assert message_ids(ws) == {user("u1"): {"n2", "n3", "n4"}, "email:new@x.io": {"n1"}}
    assert dict(ws.query("SELECT profile_id, user_id FROM cdp.profiles")) == {user("u1"): "u1",
                                                                              "email:new@x.io": None}


def test_an_anonymous_id_limit_of_two_detaches_a_third_device(workspace):
    """Three devices: the two first seen stay (a tie at one instant goes by message_id); the
    third is a profile keyed by its anonymous id. A later run that brings an even earlier
    device detaches the second one, without a rebuild."""
    ws = workspace(PROJECT, STITCH_CDP_YAML + "  limits: {anonymous_id: 2}\n")
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", anonymous="laptop"),
        with_id(identify("u1", "2026-06-03T00:00:00Z", anonymous="tablet"), "i-b"),
        with_id(identify("u1", "2026-06-03T00:00:00Z", anonymous="phone"), "i-a"),
        with_id(track(None, "V", "2026-06-04T00:00:00Z", anonymous="laptop"), "t1"),
        with_id(track(None, "V", "2026-06-04T00:00:00Z", anonymous="phone"), "t2"),
        with_id(track(None, "V", "2026-06-04T00:00:00Z", anonymous="tablet"), "t3"),
        with_id(track("u1", "V", "2026-06-05T00:00:00Z", anonymous="tablet"), "t4"),
    )
    assert ws.run().identity_rebuilt
    assert identity_map(ws) == {("user_id", "u1"): user("u1"), ("anonymous_id", "laptop"): user("u1"),
                                ("anonymous_id", "phone"): user("u1"), ("anonymous_id", "tablet"): anon("tablet")}
    assert message_ids(ws) == {user("u1"): {"t1", "t2", "t4"}, anon("tablet"): {"t3"}}
    assert dict(ws.query("SELECT profile_id, user_id FROM cdp.profiles")) == {user("u1"): "u1", anon("tablet"): None}

    ws.land(identify("u1", "2026-05-01T00:00:00Z", anonymous="old-pc"))  # landed late
    assert not ws.run().identity_rebuilt
    assert identity_map(ws) == {("user_id", "u1"): user("u1"), ("anonymous_id", "old-pc"): user("u1"),
                                ("anonymous_id", "laptop"): user("u1"), ("anonymous_id", "phone"): anon("phone"),
                                ("anonymous_id", "tablet"): anon("tablet")}
    assert message_ids(ws) == {user("u1"): {"t1", "t4"}, anon("phone"): {"t2"}, anon("tablet"): {"t3"}}


def test_a_detached_identifier_without_messages_of_its_own_has_no_profiles_row(workspace):
    """Two phones seen with u1 (`limits: {phone: 1}`): the second is detached as `phone:222`.
    Every message carrying it also carries a user id or an anonymous id (which ranks before
    phone), so rule 5 gives that profile no messages: identity_map has it, profiles does not."""
    ws = workspace(PROJECT, PHONE_CDP_YAML + "  limits: {phone: 1}\n")
    ws.land(
        with_context(identify("u1", "2026-06-01T00:00:00Z"), phone="111"),
        with_context(identify("u1", "2026-06-02T00:00:00Z"), phone="222"),
        with_id(with_context(track(None, "V", "2026-06-03T00:00:00Z", anonymous="a1"), phone="222"), "p1"),
    )
    ws.run()
    assert identity_map(ws) == {("user_id", "u1"): user("u1"), ("phone", "111"): user("u1"),
                                ("phone", "222"): "phone:222", ("anonymous_id", "a1"): user("u1")}
    assert message_ids(ws) == {user("u1"): {"p1"}}
    assert ws.query("SELECT profile_id FROM cdp.profiles") == [(user("u1"),)]


@pytest.mark.parametrize(("limit", "key", "message"), [
    ("user_id: 2", "user_id", ("only `limits: {user_id: 1}` is supported for user ids: they merge only through an "
                               "explicit alias")),
    ("phon: 1", "phon", ("unknown identifier type 'phon' (this project's identifiers: user_id, email, anonymous_id, "
                         "phone)")),
    ("email: 0", "email", "a limit is a positive number of email identifiers per profile, not 0"),
    ("phone: -1", "phone", "a limit is a positive number of phone identifiers per profile, not -1"),
])
def test_limits_are_positive_and_of_the_projects_identifiers_and_user_id_takes_only_1(tmp_path, limit, key,
                                                                                          message):
    cdp_yaml = PHONE_CDP_YAML + f"  limits:\n    anonymous_id: 2\n    {limit}\n"
    with pytest.raises(SpecError) as info:
        load_project(write_project(tmp_path, PROJECT, cdp_yaml), environ={})
    [problem] = info.value.problems
    assert (problem.file, problem.line, problem.key) == ("cdp.yaml", len(cdp_yaml.splitlines()),
                                                         f"identity.limits.{key}")
    assert problem.message.startswith(message), problem.message


# ------------------------------------------------------------------ stability across runs


def test_profile_ids_stay_the_same_as_new_data_arrives(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(
        page(None, "Home", "2026-06-01T00:00:00Z", anonymous="a1"),
        identify("u5", "2026-06-02T00:00:00Z", anonymous="a1", email="five@x.io"),
        page(None, "Home", "2026-06-01T00:00:00Z", anonymous="lonely"),
    )
    ws.run(datetime(2026, 6, 10, tzinfo=UTC))
    first = identity_map(ws)
    assert set(first.values()) == {user("u5"), anon("lonely")}

    # New devices, a later user aliased in, more anonymous browsing, a late-arriving message
    # with an old timestamp: the keys (u5, lonely) stay, so the ids do.
    ws.land(
        track("u5", "A", "2026-06-11T00:00:00Z", anonymous="a2"),
        with_context(track(None, "A", "2026-05-01T00:00:00Z", anonymous="a0"), email="five@x.io"),
        track("u9", "A", "2026-06-12T00:00:00Z"),
        alias("u9", "u5", "2026-06-13T00:00:00Z"),
        page(None, "Home", "2026-05-01T00:00:00Z", anonymous="lonely2"),
        identify(None, "2026-06-14T00:00:00Z", anonymous="lonely2", email="lonely@x.io"),
        identify(None, "2026-06-14T00:00:00Z", anonymous="lonely", email="lonely@x.io"),
    )
    ws.run(datetime(2026, 6, 20, tzinfo=UTC))
    second = identity_map(ws)
    assert {k: second[k] for k in first if k[1] != "lonely"} == {k: v for k, v in first.items() if k[1] != "lonely"}
    assert second[("user_id", "u9")] == second[("anonymous_id", "a0")] == user("u5")
    # Two anonymous profiles merging: the group {lonely, lonely2} is keyed by its earliest
    # anonymous id, lonely2 (first seen 05-01, late-arriving) — its key changed (rule 6).
    assert second[("anonymous_id", "lonely")] == anon("lonely2")

    # An earlier user id arrives (aliased into the account): now it names the profile.
    ws.land(
        track("u1", "A", "2026-04-01T00:00:00Z"),
        alias("u5", "u1", "2026-06-15T00:00:00Z"),
    )
    ws.run(datetime(2026, 6, 20, tzinfo=UTC))
    third = identity_map(ws)
    assert {third[k] for k in first if k[1] != "lonely"} == {user("u1")}
    assert third[("user_id", "u9")] == user("u1")


def test_an_anonymous_profile_is_renamed_when_a_user_id_arrives(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(page(None, "Home", "2026-06-01T00:00:00Z", anonymous="a1"))
    ws.run()
    assert identity_map(ws) == {("anonymous_id", "a1"): anon("a1")}
    ws.land(identify("u1", "2026-06-02T00:00:00Z", anonymous="a1"))
    ws.run()
    assert identity_map(ws) == {("anonymous_id", "a1"): user("u1"), ("user_id", "u1"): user("u1")}
    assert counts(ws) == {user("u1"): 1}


def test_two_keys_with_one_value_are_both_written_type_colon_value(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(
        track("x", "E", "2026-06-01T00:00:00Z"),
        page(None, "Home", "2026-06-02T00:00:00Z", anonymous="x"),  # never seen with a user id
        page(None, "Home", "2026-06-02T00:00:00Z", anonymous="y"),
    )
    ws.run()
    assert identity_map(ws) == {("user_id", "x"): "user_id:x", ("anonymous_id", "x"): "anonymous_id:x",
                                ("anonymous_id", "y"): "y"}
    assert counts(ws) == {"user_id:x": 1, "anonymous_id:x": 1, "y": 1}


# ------------------------------------------------------------------ as-of


def test_messages_at_or_after_as_of_do_not_stitch(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    as_of = "2026-06-10T00:00:00Z"
    ws.land(
        identify("u1", as_of, anonymous="d"),  # at as-of: ignored
        identify("u2", "2026-06-05T00:00:00Z", anonymous="d"),
        track(None, "V", "2026-06-01T00:00:00Z", anonymous="d"),
        alias("u2", "u3", "2026-06-06T00:00:00Z"),  # u3's only own message is after as-of
        track("u3", "V", "2026-06-11T00:00:00Z"),
        alias("u2", "u4", "2026-06-12T00:00:00Z"),  # the alias itself is after as-of
        track("u4", "V", "2026-06-01T00:00:00Z"),
    )
    ws.run(datetime(2026, 6, 10, tzinfo=UTC))
    assert identity_map(ws) == {
        ("user_id", "u2"): user("u2"),
        ("anonymous_id", "d"): user("u2"),
        ("anonymous_id", "u3"): user("u2"),  # a previous_id no message (before as-of) has as user_id
        ("user_id", "u4"): user("u4"),
    }
    ws.run(datetime(2026, 6, 20, tzinfo=UTC))
    later = identity_map(ws)
    # the aliases join u2, u3 and u4 (keyed by u4, the earliest); d stays with that account
    # (u2 saw it before u1), and u3 is now a user id
    assert later == {
        ("user_id", "u1"): user("u1"),
        ("user_id", "u2"): user("u4"),
        ("user_id", "u3"): user("u4"),
        ("user_id", "u4"): user("u4"),
        ("anonymous_id", "d"): user("u4"),
    }


# ------------------------------------------------------------------ property: matches the reference

USERS = ["u1", "u2", "u3", "u1", "u2", "u3", "a3"]  # a3 also as a user id: clashing keys
ANONYMOUS = ["a1", "a2", "a3"]
EMAILS = ["e1@x.io", " E1@x.io", "e2@x.io", "E2@X.IO "]
PHONES = ["p1", " p1", "p2"]
TIMES = ["2026-06-01T00:00:00Z", "2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z",
         "2026-06-02T00:00:00+02:00", "2026-06-03T00:00:00Z", "2026-06-30T00:00:00Z", "2026-07-01T00:00:00Z"]
PRIORITIES = {"email_first": PHONE_CDP_YAML, "anonymous_first": ANONYMOUS_FIRST_CDP_YAML}
LIMITS = {"none": {}, "email_1": {"email": 1}, "anonymous_1": {"anonymous_id": 1}, "anonymous_2": {"anonymous_id": 2},
          "all_1": {"user_id": 1, "email": 1, "anonymous_id": 1, "phone": 1}}


@st.composite
def message_bodies(draw) -> dict:
    kind = draw(st.sampled_from(["identify", "identify", "track", "page", "alias", "alias", "group"]))
    message: dict[str, Any] = {"type": kind, "timestamp": draw(st.sampled_from(TIMES))}
    if kind == "alias":
        message["userId"] = draw(st.sampled_from(USERS))
        message["previousId"] = draw(st.sampled_from(sorted(set(USERS + ANONYMOUS))))
        message["anonymousId"] = draw(st.none() | st.sampled_from(ANONYMOUS))
    else:
        who = draw(st.sampled_from(["user", "anonymous", "both", "both"]))
        message["userId"] = draw(st.sampled_from(USERS)) if who != "anonymous" else None
        message["anonymousId"] = draw(st.sampled_from(ANONYMOUS)) if who != "user" else None
    if kind == "track":
        message["event"] = "E"
    if kind == "page":
        message["name"] = "P"
    if kind == "group":
        message["groupId"] = "g"
    if kind in ("identify", "group") and draw(st.booleans()):
        message["traits"] = {"email": draw(st.sampled_from(EMAILS))}
    context = {}
    if draw(st.integers(0, 3)) == 0:
        context["email"] = draw(st.sampled_from([*EMAILS, ""]))
    if draw(st.integers(0, 3)) == 0:
        context["phone"] = draw(st.sampled_from([*PHONES, ""]))
    if context:
        message["context"] = {"traits": context}
    return message


@st.composite
def message_sets(draw) -> list[dict]:
    size = draw(st.integers(0, 14))  # drawn first: plain st.lists stays very short
    bodies = draw(st.lists(message_bodies(), min_size=size, max_size=size))
    ids = draw(st.permutations(range(len(bodies))))  # ids not in landing order: ties need them
    return [{"messageId": f"m{i:02d}", **body} for i, body in zip(ids, bodies, strict=True)]


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """(priority, limits) → a project with that identifier order and those limits."""
    out = {}
    for name, cdp_yaml in PRIORITIES.items():
        for limits_name, limits in LIMITS.items():
            text = cdp_yaml.replace("path: data/test.duckdb", 'path: ":memory:"')
            text += f"  limits: {json.dumps(limits)}\n" if limits else ""
            root = write_project(tmp_path_factory.mktemp(f"{name}_{limits_name}"), PROJECT, text)
            out[name, limits_name] = load_project(root, environ={})
    return out


def check(project, messages: list[dict]) -> None:
    ws = Workspace(project)
    try:
        ws.land(*messages)
        ws.run(AS_OF)
        actual_map = identity_map(ws)
        actual_mids = message_ids(ws)
        actual_profiles = {row["profile_id"]: row for row in ws.warehouse.fetch_dicts("SELECT * FROM cdp.profiles")}
    finally:
        ws.warehouse.close()

    rows = landed(messages)
    identity = project.config.identity
    expected = stitch(rows, AS_OF.replace(tzinfo=None), priority_of(identity.identifiers), identity.limits)
    assert actual_map == expected.identity_map

    by_id = {row["message_id"]: row for row in rows}
    # Profiles are listed by their messages: a detached identifier (rule 4b) may have none.
    listed = {profile_id: key for profile_id, key in expected.keys.items()
              if profile_id in expected.message_profile.values()}
    expected_mids: dict[str, set[str]] = {profile_id: set() for profile_id in listed}
    for message_id, profile_id in expected.message_profile.items():
        if by_id[message_id]["type"] in ("track", "page", "screen"):
            expected_mids[profile_id].add(message_id)
    assert actual_mids == expected_mids

    assert set(actual_profiles) == set(listed)
    for profile_id, key in listed.items():
        own = [by_id[m] for m, p in expected.message_profile.items() if p == profile_id]
        row = actual_profiles[profile_id]
        users = {value for (kind, value), p in expected.identity_map.items() if kind == "user_id" and p == profile_id}
        assert (row["user_id"] is None) == (key[0] != "user_id"), profile_id
        if users:  # "the profile's earliest user_id": the key, or one first seen at the same instant
            assert row["user_id"] in earliest_users(rows, users), profile_id
        assert row["first_seen"] == min(r["timestamp"] for r in own)
        assert row["last_seen"] == max(r["timestamp"] for r in own)


def earliest_users(rows: list[dict], users: set[str]) -> set[str]:
    """The user ids of ``users`` first seen at the earliest instant, whether an alias's
    previous_id counts as seeing it or only a message's user_id does (the spec leaves both
    that and ties at one instant open for ``profiles.user_id``)."""
    out: set[str] = set()
    for with_previous in (False, True):
        first: dict[str, datetime] = {}
        for row in rows:
            if row["timestamp"] >= AS_OF.replace(tzinfo=None):
                continue
            carried = [row["user_id"]] + ([row["previous_id"]] if with_previous and row["type"] == "alias" else [])
            for value in carried:
                if value in users:
                    first[value] = min(first.get(value, row["timestamp"]), row["timestamp"])
        out |= {value for value, at in first.items() if at == min(first.values())}
    return out


def _m(message_id: str, **fields: Any) -> dict:
    return {"messageId": message_id, **fields}


@pytest.mark.parametrize("priority", list(PRIORITIES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(messages=message_sets(), limits=st.sampled_from(sorted(LIMITS)))
@example(messages=[], limits="none")
@example(limits="none", messages=[  # an alias whose previous_id is a user id only through another alias
    _m("m1", type="alias", userId="u1", previousId="u2", timestamp="2026-06-01T00:00:00Z"),
    _m("m0", type="alias", userId="u2", previousId="a1", timestamp="2026-06-02T00:00:00Z"),
    _m("m2", type="track", anonymousId="a1", event="E", timestamp="2026-06-03T00:00:00Z"),
])
@example(limits="none", messages=[  # a floating group joined through a chain of floating identifiers
    _m("m0", type="identify", userId="u1", traits={"email": "e1@x.io"}, timestamp="2026-06-01T00:00:00Z"),
    _m("m1", type="page", anonymousId="a1", name="P", context={"traits": {"phone": "p1"}},
       timestamp="2026-06-01T00:00:00Z"),
    _m("m2", type="track", anonymousId="a2", event="E", context={"traits": {"phone": "p1"}},
       timestamp="2026-06-02T00:00:00Z"),
    _m("m3", type="track", anonymousId="a2", event="E", context={"traits": {"email": "E1@x.io"}},
       timestamp="2026-06-03T00:00:00Z"),
])
@example(limits="anonymous_1", messages=[  # a detached anonymous id whose value is another profile's user id
    _m("m0", type="identify", userId="u1", anonymousId="a1", timestamp="2026-06-01T00:00:00Z"),
    _m("m1", type="identify", userId="u1", anonymousId="a3", timestamp="2026-06-02T00:00:00Z"),
    _m("m2", type="track", anonymousId="a3", event="E", timestamp="2026-06-03T00:00:00Z"),
    _m("m3", type="track", userId="a3", event="E", timestamp="2026-06-03T00:00:00Z"),
])
@example(limits="email_1", messages=[  # a second email, detached, and a floating device joined through it
    _m("m0", type="identify", userId="u1", traits={"email": "e1@x.io"}, timestamp="2026-06-01T00:00:00Z"),
    _m("m1", type="identify", userId="u1", traits={"email": "e2@x.io"}, timestamp="2026-06-02T00:00:00Z"),
    _m("m2", type="track", anonymousId="a2", event="E", context={"traits": {"email": "e2@x.io"}},
       timestamp="2026-06-03T00:00:00Z"),
    _m("m3", type="track", anonymousId="a2", event="E", timestamp="2026-06-04T00:00:00Z"),
])
def test_stitching_matches_the_reference(projects, priority, limits, messages):
    check(projects[priority, limits], messages)


# ------------------------------------------------------------------ traits and audiences, stitched


@pytest.fixture(scope="module")
def stitched_reference_project(tmp_path_factory):
    """The project of tests/compiler/test_matches_reference.py with stitching on."""
    root = write_project(tmp_path_factory.mktemp("stitched_reference"), tm.PROJECT_YAML,
                         tm.CDP_YAML + "identity:\n  stitch: true\n")
    return load_project(root, environ={})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=tm.event_sets())
@example(data=([  # an alias makes an anonymous id's browsing the user's
    _m("m0", type="track", anonymousId="a2", event="Purchase", timestamp="2026-06-29T23:59:00Z",
       properties={"amount": 3}),
    _m("m1", type="alias", userId="u1", previousId="a2", timestamp="2026-06-29T23:59:00Z")], 1, AS_OF))
@example(data=([  # a shared device: anonymous-only events go to the user first seen on it
    _m("m0", type="identify", userId="u2", anonymousId="a1", traits={"plan": "pro"}, timestamp="2026-06-01T00:00:00Z"),
    _m("m1", type="identify", userId="u1", anonymousId="a1", traits={"plan": "free"}, timestamp="2026-06-02T00:00:00Z"),
    _m("m2", type="track", anonymousId="a1", event="Purchase", timestamp="2026-06-29T00:00:00Z",
       properties={"amount": 5})], 3, AS_OF))
def test_traits_and_audiences_match_the_reference_when_stitched(stitched_reference_project, data):
    """test_matches_reference's property with ``identity.stitch: true``: every trait kind,
    audience and split, keyed by the stitched profile ids."""
    messages, split, as_of = data
    ws = Workspace(stitched_reference_project)
    try:
        ws.land(*messages[:split])
        ws.land(*messages[split:])
        ws.run(as_of)
        actual_traits = ws.traits()
        actual_members: dict[str, dict[str, str | None]] = {}
        for audience, profile_id, split_name in ws.query("SELECT audience, profile_id, split FROM cdp.audience_members"):
            actual_members.setdefault(audience, {})[profile_id] = split_name
    finally:
        ws.warehouse.close()

    rows = ref.land(messages)
    expected_traits = ref.compute_traits(rows, as_of, tm.TRAITS, stitch=True)
    assert set(actual_traits) == set(expected_traits), "profiles differ"
    problems, resolved = [], {}
    for profile_id, expected in sorted(expected_traits.items()):
        actual = actual_traits[profile_id]
        resolved[profile_id] = {}
        for name, value in expected.items():
            if not tm.same(value, actual[name]):
                problems.append(f"{profile_id}.{name}: expected {value!r}, got {actual[name]!r}")
            resolved[profile_id][name] = tm.resolve(value, actual[name])
    assert not problems, "traits differ:\n" + "\n".join(problems)
    expected_members = ref.compute_members(rows, as_of, resolved, tm.AUDIENCES, stitch=True)
    for audience in tm.AUDIENCES:
        assert actual_members.get(audience.name, {}) == expected_members[audience.name], audience.name


def test_profiles_user_id_is_the_user_id_that_names_the_profile(workspace):
    """Regression: profiles.user_id came from the messages' user_id column only, so a user id
    first seen as an alias's previousId, or a tie at one instant, named the profile one way
    and filled profiles.user_id another."""
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(
        {"type": "alias", "messageId": "m0", "userId": "u1", "previousId": "u0", "timestamp": "2026-06-01T00:00:00Z"},
        track("u0", "E", "2026-06-05T00:00:00Z"),
    )
    ws.run()
    assert ws.query("SELECT profile_id, user_id FROM cdp.profiles") == [("u0", "u0")]


# ------------------------------------------------------------------ incremental = full

STEP_AS_OFS = [datetime(2026, 6, 2, tzinfo=UTC), datetime(2026, 6, 2, 12, tzinfo=UTC), AS_OF]


def identity_tables(ws: Workspace) -> dict[str, set[tuple]]:
    def row(values: tuple) -> tuple:
        return tuple(tuple(v) if isinstance(v, list) else v for v in values)

    return {table: {row(r) for r in ws.query(f"SELECT * FROM cdp.{table}")}
            for table in ("identity_map", "_anonymous_message_profiles", "_profile_keys", "profiles")}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=message_sets(), cuts=st.lists(st.integers(0, 14), max_size=3), late=st.booleans(),
       priority=st.sampled_from(sorted(PRIORITIES)), limits=st.sampled_from(sorted(LIMITS)))
def test_incremental_runs_equal_a_full_rebuild(projects, messages, cuts, late, priority, limits):
    """Messages arrive in batches, each followed by a run at a later (or the same) as-of;
    with ``late`` every batch runs at the final as-of, so old timestamps arrive late."""
    ws = Workspace(projects[priority, limits])
    try:
        edges = sorted({0, *cuts, len(messages)})
        for index, (start, end) in enumerate(zip(edges, edges[1:], strict=False)):
            ws.land(*messages[start:end])
            result = ws.run(AS_OF if late else STEP_AS_OFS[min(index, len(STEP_AS_OFS) - 1)])
            assert result.identity_rebuilt == (index == 0)
        ws.run(AS_OF)
        incremental = identity_tables(ws)
        assert ws.run(AS_OF, full_refresh=True).identity_rebuilt
        assert identity_tables(ws) == incremental
    finally:
        ws.warehouse.close()


def test_a_run_reads_only_new_messages_and_keeps_untouched_profiles(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(identify("u1", "2026-06-01T00:00:00Z", anonymous="a1"), page(None, "Home", "2026-06-01T00:00:00Z", anonymous="a2"))
    first = ws.run(datetime(2026, 6, 10, tzinfo=UTC))
    assert (first.identity_rebuilt, first.messages_stitched) == (True, 2)
    ws.land(track(None, "E", "2026-06-11T00:00:00Z", anonymous="a2"),
            track(None, "E", "2026-06-05T00:00:00Z", anonymous="a3"))  # landed late
    second = ws.run(datetime(2026, 6, 20, tzinfo=UTC))
    assert (second.identity_rebuilt, second.messages_stitched) == (False, 2)
    assert identity_map(ws) == {("user_id", "u1"): "u1", ("anonymous_id", "a1"): "u1",
                                ("anonymous_id", "a2"): "a2", ("anonymous_id", "a3"): "a3"}
    assert counts(ws) == {"u1": 0, "a2": 2, "a3": 1}


def test_only_minutes_whose_count_grew_are_searched_and_a_deleted_event_rebuilds(workspace):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(identify("u1", "2026-06-01T00:00:00Z", anonymous="a1"), page(None, "Home", "2026-06-01T00:00:30Z", anonymous="a2"))
    assert ws.run(datetime(2026, 6, 10, tzinfo=UTC)).identity_rebuilt
    # a late arrival in a minute that already had a stitched message: its count grew
    ws.land(track(None, "E", "2026-06-01T00:00:10Z", anonymous="a1"))
    late = ws.run(datetime(2026, 6, 10, tzinfo=UTC))
    assert (late.identity_rebuilt, late.messages_stitched) == (False, 1)
    assert counts(ws) == {"u1": 1, "a2": 1}  # a1's anonymous track went to u1 (identifies are not counted)
    # nothing new: no minute changed, nothing read
    assert ws.run(datetime(2026, 6, 10, tzinfo=UTC)).messages_stitched == 0
    # an event deleted from the landing table: the stitched state no longer describes it
    ws.query("DELETE FROM raw.events WHERE type = 'page'")
    deleted = ws.run(datetime(2026, 6, 10, tzinfo=UTC))
    assert deleted.identity_rebuilt and identity_map(ws) == {("user_id", "u1"): "u1", ("anonymous_id", "a1"): "u1"}


def test_identity_is_rebuilt_when_as_of_goes_back_or_the_settings_change(workspace, tmp_path):
    ws = workspace(PROJECT, STITCH_CDP_YAML)
    ws.land(identify("u1", "2026-06-01T00:00:00Z", anonymous="a1"), identify("u2", "2026-06-15T00:00:00Z", anonymous="a1"))
    assert ws.run(datetime(2026, 6, 20, tzinfo=UTC)).identity_rebuilt
    back = ws.run(datetime(2026, 6, 10, tzinfo=UTC))
    assert back.identity_rebuilt and identity_map(ws) == {("user_id", "u1"): "u1", ("anonymous_id", "a1"): "u1"}
    assert not ws.run(datetime(2026, 6, 10, tzinfo=UTC)).identity_rebuilt
    reordered = load_project(write_project(ws.project.root, PROJECT, ANONYMOUS_FIRST_CDP_YAML), environ={})
    assert run_project(reordered, ws.warehouse, datetime(2026, 6, 10, tzinfo=UTC)).identity_rebuilt
    # limits too; the user_id limit of 1 is no setting (it is always so)
    for limits, rebuilt in [("{user_id: 1}", False), ("{anonymous_id: 1}", True), ("{anonymous_id: 1}", False),
                            ("{anonymous_id: 2}", True), ("{user_id: 1}", True)]:
        cdp_yaml = ANONYMOUS_FIRST_CDP_YAML + f"  limits: {limits}\n"
        limited = load_project(write_project(ws.project.root, PROJECT, cdp_yaml), environ={})
        assert run_project(limited, ws.warehouse, datetime(2026, 6, 10, tzinfo=UTC)).identity_rebuilt == rebuilt, limits
