"""tracking_plan.yaml is read like every other spec file: a bad plan is reported by
load_project / `cdp validate` with file:line, the key path and a hint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cdp_warehouse.cli import main
from cdp_warehouse.errors import SpecError, SpecProblem
from cdp_warehouse.specs import load_project
from cdp_warehouse.tracking.plan import load_plan, mode_for
from tests.conftest import REPO, write_project
from tests.specs.test_validation import line
from tests.tracking.conftest import cdp_yaml, write_plan_project

PLAN_FILE = "tracking_plan.yaml"


def problems(root: Path) -> list[SpecProblem]:
    with pytest.raises(SpecError) as info:
        load_project(root, environ={})
    return info.value.problems


def one(found: list[SpecProblem], key: str) -> SpecProblem:
    matching = [p for p in found if p.key == key]
    assert len(matching) == 1, [str(p) for p in found]
    return matching[0]


def test_the_example_plan_loads_and_sets_source_modes():
    project = load_project(REPO, environ={})
    plan = load_plan(project)
    assert plan.mode == "flag"
    assert plan.events["Payment Processed"].properties["revenue"].required
    assert plan.identify.traits["email"].format == "email"
    assert mode_for(project, plan, "web") == "flag"
    assert mode_for(project, plan, "backend") == "block"
    # not under `sources` (cdp load's default): the plan's mode
    assert mode_for(project, plan, "load") == "flag"


def test_a_typo_in_a_property_schema_names_file_line_and_suggests(tmp_path):
    plan = """\
        mode: block
        events:
          Payment Processed:
            properties:
              revenue: {type: number, requried: true}
        """
    problem = one(problems(write_plan_project(tmp_path, plan)),
                  "events.Payment Processed.properties.revenue.requried")
    assert problem.file == PLAN_FILE
    assert problem.line == line(plan, "revenue:")
    assert "unknown key 'requried'" in problem.message
    assert problem.hint and "required" in problem.hint


def test_every_problem_of_the_plan_is_reported_at_its_line(tmp_path):
    plan = """\
        mode: strict
        events:
          Signed Up:
            properties:
              plan:
                type: text
              seats:
                type: integer
                enum: [one, two]
              email:
                type: integer
                format: email
        identify:
          traits:
            age: {type: number, required: yes}
        """
    found = problems(write_plan_project(tmp_path, plan))
    assert one(found, "mode").line == line(plan, "mode: strict")
    assert "allow" in one(found, "mode").message
    assert one(found, "events.Signed Up.properties.plan.type").line == line(plan, "type: text")
    enum = one(found, "events.Signed Up.properties.seats")
    assert enum.line == line(plan, "seats:") and "'one'" in enum.message and "integer" in enum.message
    assert "format" in one(found, "events.Signed Up.properties.email").message
    assert one(found, "identify.traits.age.required").line == line(plan, "age:")
    assert all(p.file == PLAN_FILE for p in found)


def test_a_plan_that_is_not_a_mapping(tmp_path):
    found = problems(write_plan_project(tmp_path, "- just\n- a list\n"))
    assert found[0].file == PLAN_FILE and "mapping" in found[0].message


def test_yaml_syntax_error_in_the_plan_has_its_line(tmp_path):
    plan = "events:\n  A:\n    properties: {a: [1, 2}\n"
    found = problems(write_plan_project(tmp_path, plan))
    assert found[0].file == PLAN_FILE and found[0].line == 3 and "YAML" in found[0].message


def test_a_missing_plan_file_points_at_cdp_yaml(tmp_path):
    root = write_project(tmp_path, "traits: []\n", cdp_yaml(plan_file="plans/missing.yaml"))
    problem = one(problems(root), "tracking_plan")
    assert problem.file == "cdp.yaml"
    assert problem.line == line(cdp_yaml(plan_file="plans/missing.yaml"), "tracking_plan:")
    assert "not found" in problem.message and "cdp plan infer" in problem.hint


def test_a_source_mode_without_a_plan_is_an_error(tmp_path):
    text = cdp_yaml({"web": "block"}, plan_file=None)
    problem = one(problems(write_project(tmp_path, "traits: []\n", text)), "sources.web.tracking_plan_mode")
    assert problem.file == "cdp.yaml" and problem.line == line(text, "tracking_plan_mode")


def test_plan_problems_come_with_the_other_problems(tmp_path):
    root = write_plan_project(tmp_path, "events:\n  A:\n    propertes: {}\n")
    (root / "audiences" / "main.yaml").write_text("audiences:\n  - name: x\n    where: nope > 1\n")
    files = {p.file for p in problems(root)}
    assert files == {PLAN_FILE, "audiences/main.yaml"}


def test_cdp_validate_prints_plan_problems_as_file_line(tmp_path):
    root = write_plan_project(tmp_path, "mode: flag\nevents:\n  A:\n    properties:\n      n: {type: numbr}\n")
    result = CliRunner().invoke(main, ["--project", str(root), "validate"], env={"CDP_PROJECT": None})
    assert result.exit_code == 1
    assert "tracking_plan.yaml:5: events.A.properties.n.type:" in result.output


def test_null_in_a_type_list_means_the_json_null_type(tmp_path):
    root = write_plan_project(tmp_path, "events:\n  A:\n    properties:\n      n: {type: [string, null]}\n")
    plan = load_plan(load_project(root, environ={}))
    assert plan.events["A"].properties["n"].types == ("string", "null")


def test_an_edited_plan_is_read_again_and_a_broken_one_raises(tmp_path):
    root = write_plan_project(tmp_path, "events:\n  A:\n")
    project = load_project(root, environ={})
    assert set(load_plan(project).events) == {"A"}
    (root / PLAN_FILE).write_text("events:\n  A:\n  B:\n    properties: {x: {type: string}}\n")
    assert set(load_plan(project).events) == {"A", "B"}
    (root / PLAN_FILE).write_text("events: {A: {colour: red}}\n")
    with pytest.raises(SpecError) as info:
        load_plan(project)
    assert "colour" in str(info.value)


def test_the_example_project_still_validates_with_its_plan(tmp_path):
    target = tmp_path / "example"
    target.mkdir()
    for name in ("cdp.yaml", PLAN_FILE):
        shutil.copy(REPO / name, target / name)
    shutil.copytree(REPO / "audiences", target / "audiences")
    assert load_plan(load_project(target, environ={})) is not None
