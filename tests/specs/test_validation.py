"""Validation of the analysts' YAML (spec sections 4, 5, 6 and 8): every problem is reported
with its file, the exact line, the key path and a message naming the offending thing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cdp_warehouse.errors import SpecError, SpecProblem
from cdp_warehouse.specs import load_project
from tests.conftest import MINIMAL_CDP_YAML, REPO, write_project

MAIN = "audiences/main.yaml"

CDP_WITH_DESTINATIONS = """\
name: test
warehouse:
  type: duckdb
  path: data/test.duckdb
destinations:
  braze:
    type: braze
    api_key: ${BRAZE_API_KEY}
  slack:
    type: slack
    webhook_url: ${SLACK_WEBHOOK_URL}
"""


def line(yaml_text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line of the (dedented) YAML containing ``needle``."""
    seen = 0
    for number, text in enumerate(textwrap.dedent(yaml_text).splitlines(), start=1):
        if needle in text:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not found in the YAML")


def problems_of(root: Path, environ: dict | None = None) -> list[SpecProblem]:
    with pytest.raises(SpecError) as info:
        load_project(root, environ=environ or {})
    assert info.value.problems, "a SpecError must carry at least one problem"
    return info.value.problems


def problems(tmp_path: Path, audiences_yaml: str, cdp_yaml: str = MINIMAL_CDP_YAML, **files: str) -> list[SpecProblem]:
    return problems_of(write_project(tmp_path / "project", audiences_yaml, cdp_yaml, **files))


def one(found: list[SpecProblem], key: str) -> SpecProblem:
    """The single problem reported for ``key``."""
    matching = [p for p in found if p.key == key]
    assert len(matching) == 1, f"expected one problem at {key!r}, got: {[str(p) for p in found]}"
    return matching[0]


# ---------------------------------------------------------------- names in SQL fragments


def test_unknown_trait_in_audience_where_with_did_you_mean(tmp_path):
    yaml = """\
        traits:
          - name: reports_30d
            count: {event: Report Generated, window: 30d}
        audiences:
          - name: power_users
            where: reports_3d >= 10
        """
    problem = one(problems(tmp_path, yaml), "audiences[0].where")
    assert problem.file == MAIN
    assert problem.line == line(yaml, "where: reports_3d")
    assert "reports_3d" in problem.message
    assert "unknown" in problem.message
    assert problem.hint and "reports_30d" in problem.hint


def test_unknown_trait_far_from_any_name_has_no_misleading_hint(tmp_path):
    yaml = """\
        traits:
          - name: reports_30d
            count: {event: Report Generated}
        audiences:
          - name: power_users
            where: zzzqqq > 1
        """
    problem = one(problems(tmp_path, yaml), "audiences[0].where")
    assert "zzzqqq" in problem.message
    assert not problem.hint or "reports_30d" not in problem.hint


def test_unknown_audience_in_in_audience(tmp_path):
    yaml = """\
        audiences:
          - name: buyers
            where: user_id IS NOT NULL
          - name: vip
            where: in_audience('buyer')
        """
    problem = one(problems(tmp_path, yaml), "audiences[1].where")
    assert problem.line == line(yaml, "in_audience('buyer')")
    assert "'buyer'" in problem.message
    assert problem.hint and "buyers" in problem.hint


def test_unknown_column_in_trait_where(tmp_path):
    yaml = """\
        traits:
          - name: big_orders
            count:
              event: Order Completed
              where: plan_type = 'pro'
        """
    problem = one(problems(tmp_path, yaml), "traits[0].count.where")
    assert problem.file == MAIN
    assert problem.line == line(yaml, "where: plan_type")
    assert "plan_type" in problem.message


def test_unknown_function_in_trait_where(tmp_path):
    yaml = """\
        traits:
          - name: big_orders
            count:
              event: Order Completed
              where: lowerr(properties.plan) = 'pro'
        """
    problem = one(problems(tmp_path, yaml), "traits[0].count.where")
    assert problem.line == line(yaml, "where: lowerr")
    assert "lowerr" in problem.message.lower()
    assert "function" in problem.message


def test_known_functions_and_json_paths_in_trait_where_are_fine(tmp_path):
    root = write_project(tmp_path / "project", """\
        traits:
          - name: big_orders
            count:
              event: Order Completed
              where: lower(properties.plan) = 'pro' AND context.page.url LIKE '%x%' AND type = 'track'
        """)
    project = load_project(root, environ={})
    assert project.traits["big_orders"].where is not None


def test_unknown_trait_in_expression(tmp_path):
    yaml = """\
        traits:
          - name: lifetime_revenue
            sum: {event: Payment Processed, property: revenue}
          - name: revenue_per_order
            expression:
              sql: lifetime_revenu / 2
        """
    problem = one(problems(tmp_path, yaml), "traits[1].expression.sql")
    assert problem.file == MAIN
    assert problem.line == line(yaml, "sql: lifetime_revenu")
    assert "lifetime_revenu" in problem.message
    assert problem.hint and "lifetime_revenue" in problem.hint


def test_syntax_error_in_where_names_the_line(tmp_path):
    yaml = """\
        audiences:
          - name: broken
            where: user_id = = 'x' AND (
        """
    problem = one(problems(tmp_path, yaml), "audiences[0].where")
    assert problem.line == line(yaml, "where:")
    assert "parse" in problem.message.lower()


# ---------------------------------------------------------------- cycles


def test_in_audience_cycle(tmp_path):
    yaml = """\
        audiences:
          - name: aaa
            where: in_audience('bbb')
          - name: bbb
            where: in_audience('aaa')
        """
    found = [p for p in problems(tmp_path, yaml) if "cycle" in p.message]
    assert len(found) == 1, [str(p) for p in problems(tmp_path, yaml)]
    problem = found[0]
    assert problem.file == MAIN
    assert (problem.key, problem.line) in {
        ("audiences[0].where", line(yaml, "in_audience('bbb')")),
        ("audiences[1].where", line(yaml, "in_audience('aaa')")),
    }
    assert "aaa" in problem.message and "bbb" in problem.message


def test_cycle_through_exclude(tmp_path):
    yaml = """\
        audiences:
          - name: aaa
            where: user_id IS NOT NULL
            exclude: [bbb]
          - name: bbb
            where: in_audience('aaa')
        """
    found = [p for p in problems(tmp_path, yaml) if "cycle" in p.message]
    assert len(found) == 1, [str(p) for p in problems(tmp_path, yaml)]
    problem = found[0]
    assert problem.file == MAIN
    assert problem.key.startswith(("audiences[0]", "audiences[1]"))
    assert problem.line in {line(yaml, "- name: aaa"), line(yaml, "where: user_id"), line(yaml, "exclude:"),
                            line(yaml, "in_audience('aaa')")}
    assert "aaa" in problem.message and "bbb" in problem.message


def test_longer_cycle_is_reported(tmp_path):
    yaml = """\
        audiences:
          - name: aaa
            where: in_audience('bbb')
          - name: bbb
            where: in_audience('ccc')
          - name: ccc
            where: in_audience('aaa') AND user_id IS NOT NULL
        """
    found = [p for p in problems(tmp_path, yaml) if "cycle" in p.message]
    assert len(found) == 1
    assert all(name in found[0].message for name in ("aaa", "bbb", "ccc"))


def test_audience_referring_to_itself(tmp_path):
    yaml = """\
        audiences:
          - name: loop
            where: user_id IS NOT NULL AND in_audience('loop')
        """
    problem = one(problems(tmp_path, yaml), "audiences[0].where")
    assert problem.line == line(yaml, "in_audience('loop')")
    assert "'loop'" in problem.message
    assert "itself" in problem.message


def test_audience_excluding_itself(tmp_path):
    yaml = """\
        audiences:
          - name: loop
            where: user_id IS NOT NULL
            exclude:
              - loop
        """
    problem = one(problems(tmp_path, yaml), "audiences[0].exclude[0]")
    assert problem.line == line(yaml, "- loop")
    assert "'loop'" in problem.message


def test_acyclic_references_are_fine(tmp_path):
    root = write_project(tmp_path / "project", """\
        audiences:
          - name: aaa
            where: user_id IS NOT NULL
          - name: bbb
            where: in_audience('aaa')
          - name: ccc
            where: in_audience('aaa') AND in_audience('bbb')
            exclude: [aaa]
        """)
    project = load_project(root, environ={})
    assert set(project.audiences["ccc"].audiences_used) == {"aaa", "bbb"}


# ---------------------------------------------------------------- windows


def test_bad_window_in_trait(tmp_path):
    yaml = """\
        traits:
          - name: reports_recent
            count:
              event: Report Generated
              window: 30x
        """
    problem = one(problems(tmp_path, yaml), "traits[0].count.window")
    assert problem.file == MAIN
    assert problem.line == line(yaml, "window: 30x")
    assert "30x" in problem.message


def test_bad_window_inside_events(tmp_path):
    yaml = """\
        audiences:
          - name: recent
            where: events('*', '30x') > 0
        """
    problem = one(problems(tmp_path, yaml), "audiences[0].where")
    assert problem.line == line(yaml, "events('*', '30x')")
    assert "30x" in problem.message


def test_bad_window_inside_events_where(tmp_path):
    yaml = """\
        audiences:
          - name: recent
            where: events_where('Order Completed', '7q', 'properties.total > 10') > 0
        """
    problem = one(problems(tmp_path, yaml), "audiences[0].where")
    assert "7q" in problem.message


def test_reversed_window_range_in_trait(tmp_path):
    yaml = """\
        traits:
          - name: reports_then
            count:
              event: Report Generated
              window: 30d..60d
        """
    problem = one(problems(tmp_path, yaml), "traits[0].count.window")
    assert problem.line == line(yaml, "window: 30d..60d")
    assert "30d..60d" in problem.message
    assert "60d..30d" in problem.message or "older" in problem.message


def test_reversed_window_range_inside_events(tmp_path):
    yaml = """\
        audiences:
          - name: was_active
            where: events('*', '30d..60d') > 0
        """
    problem = one(problems(tmp_path, yaml), "audiences[0].where")
    assert problem.line == line(yaml, "events('*', '30d..60d')")
    assert "30d..60d" in problem.message


@pytest.mark.parametrize("window", ["30m", "12h", "30d", "2w", "60d..30d", "2w..1d"])
def test_valid_windows(tmp_path, window):
    root = write_project(tmp_path / "project", f"""\
        traits:
          - name: things
            count: {{event: X, window: "{window}"}}
        audiences:
          - name: active
            where: events('*', '{window}') > 0 AND things > 0
        """)
    project = load_project(root, environ={})
    assert project.traits["things"].window.text == window


# ---------------------------------------------------------------- trait shape


def test_sum_without_property(tmp_path):
    yaml = """\
        traits:
          - name: revenue
            sum:
              event: Payment Processed
        """
    problem = one(problems(tmp_path, yaml), "traits[0].sum.property")
    assert problem.file == MAIN
    assert problem.line == line(yaml, "sum:")
    assert "property" in problem.message
    assert "missing" in problem.message


def test_trait_with_two_kinds(tmp_path):
    yaml = """\
        traits:
          - name: confused
            count: {event: A}
            sum: {event: B, property: amount}
        """
    found = problems(tmp_path, yaml)
    assert len(found) == 1, [str(p) for p in found]
    problem = found[0]
    assert problem.key.startswith("traits[0]")
    assert problem.line in {line(yaml, "- name: confused"), line(yaml, "count:"), line(yaml, "sum:")}
    assert "count" in problem.message and "sum" in problem.message
    assert "exactly one" in problem.message


def test_trait_with_no_kind(tmp_path):
    yaml = """\
        traits:
          - name: nothing
            description: forgot the kind
        """
    found = problems(tmp_path, yaml)
    assert len(found) == 1, [str(p) for p in found]
    problem = found[0]
    assert problem.key == "traits[0]"
    assert problem.line == line(yaml, "- name: nothing")
    assert "kind" in problem.message


def test_unknown_key_with_did_you_mean(tmp_path):
    yaml = """\
        traits:
          - name: reports_30d
            count:
              event: Report Generated
              windw: 30d
        """
    problem = one(problems(tmp_path, yaml), "traits[0].count.windw")
    assert problem.file == MAIN
    assert problem.line == line(yaml, "windw: 30d")
    assert "windw" in problem.message
    assert problem.hint and "'window'" in problem.hint


def test_unknown_top_level_trait_key_with_did_you_mean(tmp_path):
    yaml = """\
        traits:
          - name: reports_30d
            descripton: typo
            count: {event: Report Generated}
        """
    problem = one(problems(tmp_path, yaml), "traits[0].descripton")
    assert problem.line == line(yaml, "descripton:")
    assert problem.hint and "'description'" in problem.hint


def test_unknown_audience_key(tmp_path):
    yaml = """\
        audiences:
          - name: everyone
            where: user_id IS NOT NULL
            splts: {a: 50, b: 50}
        """
    problem = one(problems(tmp_path, yaml), "audiences[0].splts")
    assert problem.line == line(yaml, "splts:")
    assert problem.hint and "'splits'" in problem.hint


def test_audience_without_where(tmp_path):
    yaml = """\
        audiences:
          - name: everyone
            description: forgot the rule
        """
    problem = one(problems(tmp_path, yaml), "audiences[0].where")
    assert problem.line == line(yaml, "- name: everyone")
    assert "where" in problem.message


def test_trait_name_must_be_snake_case(tmp_path):
    yaml = """\
        traits:
          - name: ReportsLast30
            count: {event: Report Generated}
        """
    problem = one(problems(tmp_path, yaml), "traits[0].name")
    assert problem.line == line(yaml, "name: ReportsLast30")


# ---------------------------------------------------------------- duplicates


def test_duplicate_trait_name(tmp_path):
    yaml = """\
        traits:
          - name: plan
            trait: {trait: plan}
          - name: reports
            count: {event: Report Generated}
          - name: plan
            trait: {trait: subscription}
        """
    problem = one(problems(tmp_path, yaml), "traits[2].name")
    assert problem.file == MAIN
    assert problem.line == line(yaml, "- name: plan", occurrence=2)
    assert "'plan'" in problem.message and "duplicate" in problem.message
    assert problem.hint and f"{MAIN}:{line(yaml, '- name: plan')}" in problem.hint


def test_duplicate_audience_name(tmp_path):
    yaml = """\
        audiences:
          - name: everyone
            where: user_id IS NOT NULL
          - name: everyone
            where: email IS NOT NULL
        """
    problem = one(problems(tmp_path, yaml), "audiences[1].name")
    assert problem.line == line(yaml, "- name: everyone", occurrence=2)
    assert "'everyone'" in problem.message
    assert problem.hint and f"{MAIN}:{line(yaml, '- name: everyone')}" in problem.hint


def test_duplicate_names_across_two_files(tmp_path):
    first = """\
        # shared definitions
        traits:
          - name: plan
            trait: {trait: plan}
        audiences:
          - name: everyone
            where: user_id IS NOT NULL
        """
    second = """\
        traits:
          - name: plan
            trait: {trait: plan}
        audiences:
          - name: everyone
            where: email IS NOT NULL
        """
    # audiences/a.yaml sorts before audiences/main.yaml, so the copy in main.yaml is the duplicate.
    found = problems(tmp_path, second, a=first)
    trait = one(found, "traits[0].name")
    assert trait.file == MAIN
    assert trait.line == line(second, "- name: plan")
    assert "'plan'" in trait.message
    assert trait.hint and f"audiences/a.yaml:{line(first, '- name: plan')}" in trait.hint
    audience = one(found, "audiences[0].name")
    assert audience.file == MAIN
    assert audience.line == line(second, "- name: everyone")
    assert "'everyone'" in audience.message
    assert audience.hint and f"audiences/a.yaml:{line(first, '- name: everyone')}" in audience.hint


# ---------------------------------------------------------------- splits and syncs


def test_splits_must_add_to_100(tmp_path):
    yaml = """\
        audiences:
          - name: churn_risk
            where: user_id IS NOT NULL
            splits: {treatment: 80, holdout: 10}
        """
    problem = one(problems(tmp_path, yaml), "audiences[0].splits")
    assert problem.file == MAIN
    assert problem.line == line(yaml, "splits:")
    assert "100" in problem.message
    assert "90" in problem.message


def test_splits_adding_to_100_are_fine(tmp_path):
    root = write_project(tmp_path / "project", """\
        audiences:
          - name: churn_risk
            where: user_id IS NOT NULL
            splits: {treatment: 90, holdout: 10}
        """)
    assert load_project(root, environ={}).audiences["churn_risk"].spec.splits == {"treatment": 90, "holdout": 10}


def test_sync_to_undeclared_destination(tmp_path):
    yaml = """\
        audiences:
          - name: everyone
            where: user_id IS NOT NULL
            sync:
              - to: slack
                channel: "#x"
              - to: hubspot
                mode: mirror
        """
    problem = one(problems(tmp_path, yaml, CDP_WITH_DESTINATIONS), "audiences[0].sync[1].to")
    assert problem.file == MAIN
    assert problem.line == line(yaml, "- to: hubspot")
    assert "'hubspot'" in problem.message


def test_sync_to_near_miss_destination_has_did_you_mean(tmp_path):
    yaml = """\
        audiences:
          - name: everyone
            where: user_id IS NOT NULL
            sync:
              - to: braz
        """
    problem = one(problems(tmp_path, yaml, CDP_WITH_DESTINATIONS), "audiences[0].sync[0].to")
    assert "'braz'" in problem.message
    assert problem.hint and "'braze'" in problem.hint


def test_sync_field_that_is_not_a_trait(tmp_path):
    yaml = """\
        traits:
          - name: plan
            trait: {trait: plan}
        audiences:
          - name: everyone
            where: user_id IS NOT NULL
            sync:
              - to: braze
                fields:
                  plan: plan
                  seats: seat_count
        """
    problem = one(problems(tmp_path, yaml, CDP_WITH_DESTINATIONS), "audiences[0].sync[0].fields.seats")
    assert problem.file == MAIN
    assert problem.line == line(yaml, "seats: seat_count")
    assert "'seat_count'" in problem.message


def test_sync_fields_may_use_profile_columns_split_and_in_audience(tmp_path):
    root = write_project(tmp_path / "project", """\
        traits:
          - name: plan
            trait: {trait: plan}
        audiences:
          - name: everyone
            where: user_id IS NOT NULL
            splits: {treatment: 50, holdout: 50}
            sync:
              - to: braze
                fields: {plan: plan, uid: user_id, mail: email, group: split, member: in_audience}
        """, CDP_WITH_DESTINATIONS)
    project = load_project(root, environ={})
    assert project.audiences["everyone"].spec.sync[0].fields["group"] == "split"


# ---------------------------------------------------------------- YAML itself


def test_yaml_syntax_error_in_audiences_file(tmp_path):
    yaml = """\
        traits:
          - name: plan
            trait: {trait: plan}
          - name: broken
            description: this: has a colon
            count: {event: X}
        """
    found = problems(tmp_path, yaml)
    assert len(found) == 1
    problem = found[0]
    assert problem.file == MAIN
    assert problem.line == line(yaml, "description: this: has")
    assert "YAML" in problem.message


def test_yaml_syntax_error_in_cdp_yaml(tmp_path):
    cdp = """\
        name: test
        warehouse:
          type: duckdb
          path: [data/test.duckdb
        schedule: "0 * * * *"
        """
    root = write_project(tmp_path / "project", "traits: []\n", cdp)
    found = problems_of(root)
    problem = next(p for p in found if p.file == "cdp.yaml")
    assert "YAML" in problem.message
    # the unclosed flow sequence starts on line 4; PyYAML notices it on the next line
    assert problem.line in {line(cdp, "path: ["), line(cdp, "schedule:")}


def test_duplicate_yaml_key_is_an_error(tmp_path):
    yaml = """\
        traits:
          - name: plan
            trait: {trait: plan}
            trait: {trait: tier}
        """
    found = problems(tmp_path, yaml)
    assert len(found) == 1
    assert found[0].file == MAIN
    assert found[0].line == line(yaml, "trait: {trait: tier}")
    assert "trait" in found[0].message


def test_on_key_is_read_as_on_not_as_a_boolean(tmp_path):
    root = write_project(tmp_path / "project", """\
        audiences:
          - name: everyone
            where: user_id IS NOT NULL
            sync:
              - to: slack
                channel: "#alerts"
                on: exited
        """, CDP_WITH_DESTINATIONS)
    project = load_project(root, environ={})
    assert project.audiences["everyone"].spec.sync[0].on == "exited"


def test_bad_on_value_is_reported_under_the_key_on(tmp_path):
    yaml = """\
        audiences:
          - name: everyone
            where: user_id IS NOT NULL
            sync:
              - to: slack
                on: sometimes
        """
    problem = one(problems(tmp_path, yaml, CDP_WITH_DESTINATIONS), "audiences[0].sync[0].on")
    assert problem.line == line(yaml, "on: sometimes")
    assert "True" not in problem.key


def test_yes_and_no_stay_strings(tmp_path):
    root = write_project(tmp_path / "project", """\
        traits:
          - name: answer
            trait: {trait: "yes"}
          - name: other
            trait: {trait: no}
        """)
    project = load_project(root, environ={})
    assert project.traits["other"].spec.trait.trait == "no"


# ---------------------------------------------------------------- everything at once


def test_several_errors_in_two_files_are_reported_together(tmp_path):
    main = """\
        traits:
          - name: reports_30d
            count:
              event: Report Generated
              windw: 30d
        audiences:
          - name: power_users
            where: reports_3d > 10
        """
    extra = """\
        traits:
          - name: revenue
            sum: {event: Payment Processed}
        audiences:
          - name: spenders
            where: events('*', '30x') > 0
            splits: {a: 10, b: 10}
        """
    found = problems(tmp_path, main, extra=extra)
    assert len(found) >= 5, [str(p) for p in found]
    assert {p.file for p in found} == {MAIN, "audiences/extra.yaml"}
    keys = {(p.file, p.key) for p in found}
    assert (MAIN, "traits[0].count.windw") in keys
    assert ("audiences/extra.yaml", "traits[0].sum.property") in keys
    assert ("audiences/extra.yaml", "audiences[0].splits") in keys
    assert ("audiences/extra.yaml", "audiences[0].where") in keys
    # power_users refers to an unknown trait (reports_3d); that must be reported too even
    # though the trait reports_30d itself is broken
    assert any(p.file == MAIN and p.key == "audiences[0].where" and "reports_3d" in p.message for p in found)


def test_problems_in_cdp_yaml_and_audiences_are_reported_together(tmp_path):
    cdp = """\
        name: test
        warehouse:
          type: duckdb
          path: data/test.duckdb
        schedul: "0 * * * *"
        """
    audiences = """\
        traits:
          - name: revenue
            sum: {event: Payment Processed}
          - name: plan
            trait: {trait: plan}
            windw: 30d
        """
    found = problems(tmp_path, audiences, cdp)
    files = {p.file for p in found}
    assert files == {"cdp.yaml", MAIN}, [str(p) for p in found]
    top = one(found, "schedul")
    assert top.file == "cdp.yaml" and top.line == line(cdp, "schedul:")
    assert top.hint and "'schedule'" in top.hint


def test_spec_error_message_names_the_first_problem_and_the_count(tmp_path):
    root = write_project(tmp_path / "project", """\
        audiences:
          - name: aaa
            where: nope_one > 1
          - name: bbb
            where: nope_two > 1
        """)
    with pytest.raises(SpecError) as info:
        load_project(root, environ={})
    text = str(info.value)
    assert "audiences/main.yaml:3" in text
    assert "1 more" in text


def test_problem_renders_as_file_line_key_message():
    problem = SpecProblem("audiences/main.yaml", 7, "audiences[0].where", "unknown trait 'x'", "did you mean 'y'?")
    assert str(problem) == "audiences/main.yaml:7: audiences[0].where: unknown trait 'x' (did you mean 'y'?)"


# ---------------------------------------------------------------- the example project


def test_repo_example_project_loads():
    project = load_project(REPO, environ={})
    assert project.config.name
    assert project.traits and project.audiences
    for audience in project.audiences.values():
        assert set(audience.traits_used) <= set(project.traits)


def test_shared_spec_example_project_loads(tmp_path):
    example = Path("/work/shared/spec/example")
    if not example.is_dir():
        pytest.skip("no shared example")
    import shutil

    target = tmp_path / "example"
    shutil.copytree(example, target)
    project = load_project(target, environ={})
    assert project.audiences


# ---------------------------------------------------------------- multi-line fragments


def test_expression_traits_forming_a_cycle(tmp_path):
    yaml = """\
        traits:
          - name: aaa
            expression: {sql: "bbb + 1"}
          - name: bbb
            expression: {sql: "aaa + 1"}
        """
    found = [p for p in problems(tmp_path, yaml) if "cycle" in p.message]
    assert len(found) == 1
    assert found[0].key in {"traits[0].expression.sql", "traits[1].expression.sql"}
    assert found[0].line in {line(yaml, '"bbb + 1"'), line(yaml, '"aaa + 1"')}
    assert "aaa" in found[0].message and "bbb" in found[0].message


def test_unknown_name_in_a_multi_line_where_points_at_its_own_line(tmp_path):
    # The spec's own churn_risk example writes `where: >` over several lines; a typo on the
    # fourth line of the rule should be reported on that line, not on the `where:` key.
    yaml = """\
        traits:
          - name: plan
            trait: {trait: plan}
        audiences:
          - name: churn_risk
            where: >
              events('*', '60d..30d') > 0
              AND events('*', '30d') = 0
              AND plann <> 'free'
              AND events('Support Contacted', '30x') = 0
        """
    found = problems(tmp_path, yaml)
    typo = next(p for p in found if "plann" in p.message)
    assert typo.key == "audiences[0].where"
    assert typo.line == line(yaml, "AND plann")
    window = next(p for p in found if "30x" in p.message)
    assert window.line == line(yaml, "'30x'")


@pytest.mark.parametrize(
    "place, sql, expected",
    [
        ("trait where", "properties.tags[1] = 'vip'", "JSON array elements cannot be indexed"),
        ("trait where", "user_id IN (SELECT user_id FROM raw.events)", "subqueries and tables are not allowed"),
        ("expression", "row_number() OVER () + visits", "window functions are not allowed"),
        ("audience", "visits > 0 AND user_id IN (SELECT user_id FROM cdp.profiles)", "subqueries and tables"),
        ("audience", "row_number() OVER () = 1", "window functions are not allowed"),
    ],
)
def test_fragments_may_not_read_tables_use_windows_or_index_json(tmp_path, place, sql, expected):
    """Regression: these validated and then read other tables (ignoring as-of), depended on
    row order, or indexed the characters of a JSON text."""
    where = f'"{sql}"' if place == "trait where" else "\"properties.x = '1'\""
    expression = f'"{sql}"' if place == "expression" else '"visits + 1"'
    rule = f'"{sql}"' if place == "audience" else '"visits > 0"'
    found = problems(tmp_path, f"""
        traits:
          - name: visits
            count: {{event: Visit, where: {where}}}
          - name: derived
            expression: {{sql: {expression}}}
        audiences:
          - name: aud
            where: {rule}
    """)
    assert any(expected in p.message for p in found), found


def test_a_trait_and_an_audience_may_not_share_a_name(tmp_path):
    """Regression: `--select buyers` silently picked the audience when a trait had the same name."""
    found = problems(tmp_path, """
        traits:
          - name: buyers
            count: {event: Order Completed}
        audiences:
          - name: buyers
            where: buyers > 0
    """)
    [problem] = [p for p in found if "buyers" in p.message]
    assert problem.key == "audiences[0].name" and "first defined at audiences/main.yaml:3" in problem.hint


@pytest.mark.parametrize(
    "trait, message",
    [
        ("sum: {property: x, type: boolean}", "a sum trait has a fixed type"),
        ("type: number\n    count: {event: E}", "a count trait has a fixed type"),
        ("type: number\n    last: {property: x, type: boolean}", "`type` is given twice"),
    ],
)
def test_type_is_only_for_value_kinds_and_given_once(tmp_path, trait, message):
    """Regression: `type` on a fixed-type kind was accepted and silently ignored."""
    found = problems(tmp_path, f"""
traits:
  - name: t
    {trait}
""")
    assert any(message in p.message for p in found), found


@pytest.mark.parametrize("schedule", ["nonsense", "0 6 * *", "61 * * * *", "0 6 * * mon-fri/0"])
def test_a_bad_schedule_names_its_line(tmp_path, schedule):
    yaml = f"""
audiences:
  - name: a
    where: "events('*') > 0"
    schedule: "{schedule}"
"""
    found = problems(tmp_path, yaml)
    [problem] = found
    assert problem.key == "audiences[0].schedule" and problem.line == line(yaml, "schedule:")
    assert "bad schedule" in problem.message


@pytest.mark.parametrize("schedule", ["0 6 * * *", "*/15 * * * *", "0 0 1 jan,jul *", "30 8 * * mon-fri"])
def test_valid_schedules_pass(tmp_path, schedule):
    root = write_project(tmp_path / "project", f"""
audiences:
  - name: a
    where: "events('*') > 0"
    schedule: "{schedule}"
""")
    assert load_project(root, environ={}).audiences["a"].spec.schedule == schedule


def test_unsupported_identity_limits_are_refused(tmp_path):
    cdp_yaml = MINIMAL_CDP_YAML + "identity:\n  limits: {user_id: 2}\n"
    found = problems(tmp_path, "traits: []\n", cdp_yaml)
    assert any("only `limits: {user_id: 1}` is supported" in p.message for p in found), found
