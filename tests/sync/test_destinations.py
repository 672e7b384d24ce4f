"""`cdp validate` refuses a sync a destination could not carry out, naming file and line."""

from __future__ import annotations

import pytest

from tests.specs.test_validation import CDP_WITH_DESTINATIONS, MAIN, line
from tests.sync.conftest import sync_entry_problem


@pytest.mark.parametrize(("entry", "key", "needle", "message"), [
    ("- to: slack\n  mode: mirror", "mode", "mode: mirror", "on: entered"),
    ("- to: braze\n  mode: mirror", "mode", "mode: mirror", "membership: {attribute: NAME}"),
    ("- to: braze\n  membership: {tag: Churn}", "membership.tag", "membership:", "attribute"),
    ("- to: braze\n  membership: {attribute: a, array: b}", "membership", "membership:", "not both"),
    ("- to: slack\n  fields: {plan: user_id}", "fields", "fields:", "does not apply to slack"),
    ("- to: braze\n  channel: '#x'", "channel", "channel:", "does not apply to braze"),
])
def test_a_sync_the_destination_cannot_do_is_an_error(tmp_path, entry, key, needle, message):
    yaml, problem = sync_entry_problem(tmp_path, entry, CDP_WITH_DESTINATIONS, key)
    assert problem.file == MAIN
    assert problem.line == line(yaml, needle)
    assert message in problem.message
