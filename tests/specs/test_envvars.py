"""``${VAR}`` and ``${VAR:-default}`` in cdp.yaml (spec sections 6 and 8)."""

from __future__ import annotations

import pytest

from cdp_warehouse.errors import SpecError
from cdp_warehouse.specs import load_project
from cdp_warehouse.specs.envvars import MissingEnvVar, interpolate
from cdp_warehouse.specs.yaml_lines import LineDict, LineList
from tests.conftest import write_project

AUDIENCES = """\
traits:
  - name: plan
    trait: {trait: plan}
audiences:
  - name: paying
    where: coalesce(plan, '') <> 'free'
    sync:
      - to: braze
        mode: mirror
        membership: {attribute: paying}
        fields: {plan: plan}
"""


def cdp_yaml(warehouse_path: str, extra: str = "") -> str:
    return f"""\
name: test
warehouse:
  type: duckdb
  path: {warehouse_path}
{extra}"""


BRAZE = """\
destinations:
  braze:
    type: braze
    rest_endpoint: ${BRAZE_REST_ENDPOINT}
    api_key: ${BRAZE_API_KEY}
sources:
  web:
    write_key: ${WEB_WRITE_KEY}
"""


# ---------------------------------------------------------------- interpolate()


def test_interpolate_replaces_a_variable():
    assert interpolate("${DB}", {"DB": "warehouse.duckdb"}) == "warehouse.duckdb"


def test_interpolate_keeps_surrounding_text_and_several_references():
    environ = {"HOST": "db.example.com", "PORT": "5432"}
    assert interpolate("postgres://${HOST}:${PORT}/cdp", environ) == "postgres://db.example.com:5432/cdp"


def test_interpolate_default_when_missing():
    assert interpolate("${REGION:-eu}", {}) == "eu"


def test_interpolate_value_wins_over_default():
    assert interpolate("${REGION:-eu}", {"REGION": "us"}) == "us"


def test_interpolate_default_may_contain_colons_and_slashes():
    assert interpolate("${INTERCOM_BASE_URL:-https://api.intercom.io}", {}) == "https://api.intercom.io"


def test_interpolate_empty_default():
    assert interpolate("x${SUFFIX:-}y", {}) == "xy"


def test_interpolate_empty_value_uses_default():
    # as in the shell, `:-` also covers a variable that is set but empty
    assert interpolate("${REGION:-eu}", {"REGION": ""}) == "eu"


def test_interpolate_missing_variable_raises_with_its_name():
    with pytest.raises(MissingEnvVar) as info:
        interpolate("key=${BRAZE_API_KEY}", {"OTHER": "x"})
    assert info.value.name == "BRAZE_API_KEY"
    assert isinstance(info.value, KeyError)


def test_interpolate_leaves_text_without_references_alone():
    for text in ("plain", "$HOME", "cost: $5", "{not a ref}", "${}", "${1ABC}"):
        assert interpolate(text, {"HOME": "/root"}) == text


def test_interpolate_is_single_pass():
    # a value that itself looks like a reference is not expanded again
    assert interpolate("${A}", {"A": "${B}", "B": "nope"}) == "${B}"


def test_interpolate_walks_dicts_and_lists_and_leaves_other_types():
    value = {"path": "${P}", "threads": 4, "flag": True, "nothing": None,
             "list": ["${P}", 1, {"deep": "${Q:-q}"}]}
    assert interpolate(value, {"P": "p"}) == {"path": "p", "threads": 4, "flag": True, "nothing": None,
                                              "list": ["p", 1, {"deep": "q"}]}


def test_interpolate_does_not_change_its_input():
    value = LineDict(path="${P}")
    value.line, value.key_lines = 1, {"path": 1}
    interpolate(value, {"P": "p"})
    assert value == {"path": "${P}"}


def test_interpolate_keeps_yaml_line_information():
    mapping = LineDict(path="${P}")
    mapping.line, mapping.key_lines = 3, {"path": 4}
    items = LineList(["${P}"])
    items.line, items.item_lines = 7, [8]
    mapping["items"] = items
    mapping.key_lines["items"] = 7
    result = interpolate(mapping, {"P": "p"})
    assert isinstance(result, LineDict) and result.line == 3 and result.key_lines == {"path": 4, "items": 7}
    assert isinstance(result["items"], LineList) and result["items"].item_lines == [8]
    assert result == {"path": "p", "items": ["p"]}


# ---------------------------------------------------------------- load_project()


def test_variable_in_warehouse_path(tmp_path):
    root = write_project(tmp_path / "p", AUDIENCES, cdp_yaml("${CDP_DB_PATH}", BRAZE))
    project = load_project(root, environ={"CDP_DB_PATH": "elsewhere/mine.duckdb"})
    assert project.config.warehouse.path == "elsewhere/mine.duckdb"


def test_default_in_warehouse_path(tmp_path):
    root = write_project(tmp_path / "p", AUDIENCES, cdp_yaml("${CDP_DB_PATH:-data/default.duckdb}", BRAZE))
    assert load_project(root, environ={}).config.warehouse.path == "data/default.duckdb"
    assert load_project(root, environ={"CDP_DB_PATH": "x.duckdb"}).config.warehouse.path == "x.duckdb"


def test_variables_in_other_sections(tmp_path):
    extra = "schemas:\n  raw: ${RAW_SCHEMA:-raw}\n  models: ${MODELS_SCHEMA}\nschedule: ${CDP_SCHEDULE:-0 5 * * *}\n"
    root = write_project(tmp_path / "p", AUDIENCES, cdp_yaml("data/x.duckdb", extra + BRAZE))
    project = load_project(root, environ={"MODELS_SCHEMA": "marts"})
    assert project.raw_schema == "raw"
    assert project.models_schema == "marts"
    assert project.config.schedule == "0 5 * * *"


def test_missing_variable_in_warehouse_is_an_error_naming_it(tmp_path):
    cdp = cdp_yaml("${CDP_DB_PATH}")
    root = write_project(tmp_path / "p", AUDIENCES.split("    sync:")[0], cdp)
    with pytest.raises(SpecError) as info:
        load_project(root, environ={"UNRELATED": "1"})
    problems = info.value.problems
    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert problem.file == "cdp.yaml"
    assert problem.key in {"warehouse", "warehouse.path"}
    lines = cdp.splitlines()
    assert problem.line in {lines.index("warehouse:") + 1, lines.index("  path: ${CDP_DB_PATH}") + 1}
    assert "CDP_DB_PATH" in problem.message
    assert "CDP_DB_PATH" in str(info.value)


def test_every_missing_variable_is_reported(tmp_path):
    cdp = """\
name: test
warehouse:
  type: snowflake
  account: ${SNOWFLAKE_ACCOUNT}
  user: ${SNOWFLAKE_USER}
  password: ${SNOWFLAKE_PASSWORD}
  database: ANALYTICS
"""
    root = write_project(tmp_path / "p", "traits: []\n", cdp)
    with pytest.raises(SpecError) as info:
        load_project(root, environ={"SNOWFLAKE_USER": "me"})
    text = "\n".join(str(p) for p in info.value.problems)
    assert "SNOWFLAKE_ACCOUNT" in text
    assert "SNOWFLAKE_PASSWORD" in text
    assert "SNOWFLAKE_USER" not in text


def test_variable_set_in_the_process_environment_by_default(tmp_path, monkeypatch):
    root = write_project(tmp_path / "p", AUDIENCES, cdp_yaml("${CDP_TEST_DB_PATH}", BRAZE))
    monkeypatch.setenv("CDP_TEST_DB_PATH", "from/env.duckdb")
    assert load_project(root).config.warehouse.path == "from/env.duckdb"


def test_missing_destination_credentials_do_not_fail_load_project(tmp_path):
    root = write_project(tmp_path / "p", AUDIENCES, cdp_yaml("data/x.duckdb", BRAZE))
    project = load_project(root, environ={})
    assert "braze" in project.config.destinations
    assert "web" in project.config.sources
    assert project.audiences["paying"].spec.sync[0].to == "braze"


def test_repo_example_needs_no_destination_credentials():
    from tests.conftest import REPO

    project = load_project(REPO, environ={})
    assert set(project.config.destinations) >= {"braze", "intercom", "salesforce", "slack"}
