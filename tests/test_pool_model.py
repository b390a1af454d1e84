"""The pool model (the queuefleet.fleet.pools filter, plugins/filter/pools.py): one merge and one set of checks
for preflight and the queue_worker role (issue 12).

The merge must stay the shallow "defaults, then the worker user, then the pool" it replaced,
value for value: a pool's supervisor program generation is a hash of the merged pool, so any
difference would rename (and so restart) every pool of every fleet on upgrade.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("pool_model", ROOT / "plugins/filter/pools.py")
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)

DEFAULTS = yaml.safe_load((ROOT / "roles/queue_worker/defaults/main.yml").read_text())["queue_worker_pool_defaults"]


def pools(*given, max_numprocs=64):
    return model.queuefleet_pools(list(given), DEFAULTS, "queuefleet", max_numprocs)


def test_the_merge_is_defaults_then_user_then_pool_with_values_as_written():
    given = {"name": "mail", "queues": ["mail"], "numprocs": "3", "timeout": 300, "user": "www-data"}
    result = pools(given)
    assert result["errors"] == []
    assert result["pools"] == [{**DEFAULTS, "user": "queuefleet", **given}]
    assert result["pools"][0]["numprocs"] == "3", "values are not coerced (generations depend on them)"
    assert result["processes"] == 3


def test_the_demo_and_molecule_pools_are_valid_and_counted():
    demo = yaml.safe_load((ROOT / "inventories/demo/group_vars/workers.yml").read_text())["queue_worker_pools"]
    result = model.queuefleet_pools(demo, DEFAULTS, "queuefleet", 64)
    assert result["errors"] == [] and result["processes"] == sum(p["numprocs"] for p in demo)


@pytest.mark.parametrize("given, message", [
    ({"name": "bad name", "queues": ["q"], "numprocs": 1}, "pool #1 'bad name': name must match ^[A-Za-z0-9_.-]+$ (got \"bad name\")"),
    ({"queues": ["q"], "numprocs": 1}, "pool #1: name must match ^[A-Za-z0-9_.-]+$ (got \"nothing\")"),
    ({"name": "p", "queues": [], "numprocs": 1}, "pool #1 'p': queues must be a non-empty list of queue names (got [])"),
    ({"name": "p", "queues": "q", "numprocs": 1}, "pool #1 'p': queues must be a non-empty list of queue names (got \"q\")"),
    ({"name": "p", "queues": ["ok", "not ok"], "numprocs": 1}, "pool #1 'p': queue name \"not ok\" must match ^[A-Za-z0-9_.-]+$"),
    ({"name": "p", "queues": ["q"], "numprocs": 0}, "pool #1 'p': numprocs must be between 1 and 64 (got 0)"),
    ({"name": "p", "queues": ["q"], "numprocs": True}, "pool #1 'p': numprocs must be a whole number (got true)"),
    ({"name": "p", "queues": ["q"]}, "pool #1 'p': numprocs is required"),
    ({"name": "p", "queues": ["q"], "numprocs": 1, "timeout": 0}, "pool #1 'p': timeout must be a positive number of seconds (got 0)"),
    ({"name": "p", "queues": ["q"], "numprocs": 1, "memory": -1}, "pool #1 'p': memory must not be negative (got -1)"),
    ({"name": "p", "queues": ["q"], "numprocs": 1, "sleep": 0}, "pool #1 'p': sleep must be a positive number of seconds (got 0)"),
    ({"name": "p", "queues": ["q"], "numprocs": 1, "backoff": [1, -1]}, "pool #1 'p': backoff must be seconds >= 0 or a list of them (got [1, -1])"),
    ({"name": "p", "queues": ["q"], "numprocs": 1, "environment": ["A=1"]}, "pool #1 'p': environment must be a mapping of NAME: value (got [\"A=1\"])"),
    ({"name": "p", "queues": ["q"], "numprocs": 1, "user": "Root Man"}, "pool #1 'p': user must be a system user name (got \"Root Man\")"),
    ({"name": "p", "queues": ["q"], "numprocs": 1, "numproc": 3}, "pool #1 'p': unknown key 'numproc'"),
    ({"name": "p", "queues": ["q"], "numprocs": 1, "init": "django.setup"},
     "pool #1 'p': init must be MODULE:FUNCTION such as django:setup, or \"\" for none (got \"django.setup\")"),
    ({"name": "p", "queues": ["q"], "numprocs": 1, "init": ["django:setup"]},
     "pool #1 'p': init must be MODULE:FUNCTION such as django:setup, or \"\" for none (got [\"django:setup\"])"),
])
def test_each_bad_field_gets_one_message_naming_the_pool(given, message):
    errors = pools(given)["errors"]
    assert any(e.startswith(message) for e in errors), errors


def test_one_limit_for_numprocs_everywhere():
    assert pools({"name": "p", "queues": ["q"], "numprocs": 101}, max_numprocs=100)["errors"] == [
        "pool #1 'p': numprocs must be between 1 and 100 (got 101)"]
    assert pools({"name": "p", "queues": ["q"], "numprocs": 80}, max_numprocs=100)["errors"] == []


def test_the_list_itself_is_checked():
    assert model.queuefleet_pools("default", DEFAULTS)["errors"] == ["queue_worker_pools must be a list of pools (got default)"]
    assert model.queuefleet_pools([], DEFAULTS)["errors"] == ["queue_worker_pools is empty: a worker host needs at least one pool"]
    twice = pools({"name": "a", "queues": ["q"], "numprocs": 1}, {"name": "a", "queues": ["r"], "numprocs": 2})
    assert "pool names must be unique: 'a' is used 2 times" in twice["errors"]
    assert pools("not a mapping")["errors"] == ["pool #1: must be a mapping with name, queues and numprocs (got not a mapping)"]


def test_invalid_pools_do_not_count_as_processes():
    result = pools({"name": "a", "queues": ["q"], "numprocs": 2}, {"name": "b", "queues": [], "numprocs": 5})
    assert result["processes"] == 2


def test_an_init_hook_names_new_programs_only_for_the_pools_that_set_it():
    """`init:` is a pool key like the others, absent from the defaults: a pool without it keeps
    its merged value, and so its generation (its program names), while a pool with it gets a new
    one. The role-wide queue_worker_init joins the role's program settings only when set."""
    import sys

    sys.path.insert(0, str(ROOT / "collections"))
    spec = importlib.util.spec_from_file_location("pool_programs", ROOT / "plugins/filter/pool_programs.py")
    programs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(programs)
    generation = programs.queue_worker_pool_generation

    assert "init" not in DEFAULTS
    plain = {"name": "web", "queues": ["default"], "numprocs": 2}
    hooked = {**plain, "init": "django:setup"}
    result = pools(plain, {**hooked, "name": "dj"}, {**plain, "name": "none", "init": ""})
    assert result["errors"] == []
    merged = {p["name"]: p for p in result["pools"]}
    assert "init" not in merged["web"]
    assert merged["web"] == {**DEFAULTS, "user": "queuefleet", **plain}, "the same merge as before the key existed"
    settings = {"root": "/opt/queuefleet", "lease": "30", "log_format": "plain", "log_dir": "/var/log/queuefleet",
                "stop_margin": "30", "template": "0" * 40}
    base = generation(merged["web"], settings)
    assert generation({**merged["web"], "init": "django:setup"}, settings) != base
    assert generation(merged["web"], {**settings, "init": "django:setup"}) != base
    tasks = yaml.safe_load((ROOT / "roles/queue_worker/tasks/variables.yml").read_text())
    add = next(t for t in tasks if "init" in t.get("name", "") and "set_fact" in str(t))
    assert add["when"] == "queue_worker_init | length > 0", "only a site that sets it gets new program names"
