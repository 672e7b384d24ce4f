"""`cdp validate` refuses a sync a destination could not carry out, naming file and line."""

from __future__ import annotations

import pytest

from tests.specs.test_validation import CDP_WITH_DESTINATIONS, MAIN, line, one, problems


@pytest.mark.parametrize(("entry", "key", "needle", "message"), [
    ("- to: slack\n  mode: mirror", "mode", "mode: mirror", "on: entered"),
    ("- to: braze\n  mode: mirror", "mode", "mode: mirror", "membership: {attribute: NAME}"),
    ("- to: braze\n  membership: {tag: Churn}", "membership.tag", "membership:", "attribute"),
    ("- to: braze\n  membership: {attribute: a, array: b}", "membership", "membership:", "not both"),
    ("- to: slack\n  fields: {plan: user_id}", "fields", "fields:", "does not apply to slack"),
    ("- to: braze\n  channel: '#x'", "channel", "channel:", "does not apply to braze"),
])
def test_a_sync_the_destination_cannot_do_is_an_error(tmp_path, entry, key, needle, message):
    yaml = f"""\
        audiences:
          - name: everyone
            where: user_id IS NOT NULL
            sync:
              {entry.replace(chr(10), chr(10) + " " * 14)}
        """
    problem = one(problems(tmp_path, yaml, CDP_WITH_DESTINATIONS), f"audiences[0].sync[0].{key}")
    assert problem.file == MAIN
    assert problem.line == line(yaml, needle)
    assert message in problem.message
