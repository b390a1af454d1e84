"""The role side of autoscaled pools (issue 26): the pool model's `autoscale:` key, the program
names and the autoscaler's file, the post-deploy judgement of a pool that runs anywhere in
[min, max], and preflight's capacity at max."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "collections"))


def load(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_autoscale", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


model = load("plugins/filter/pools.py")
programs = load("plugins/filter/pool_programs.py")
checks = load("plugins/filter/postdeploy_check.py")
capacity = load("plugins/filter/preflight_capacity.py")
DEFAULTS = yaml.safe_load((ROOT / "roles/queue_worker/defaults/main.yml").read_text())["queue_worker_pool_defaults"]
SETTINGS = {"template": "abc"}
SCALED = {"name": "mail", "queues": ["mail", "low"], "autoscale": {"min": 1, "max": 4, "cooldown": 30}}


def merged(*given):
    return model.queuefleet_pools(list(given), DEFAULTS, "queuefleet", 64)


def test_an_autoscaled_pool_has_max_processes_in_the_model():
    out = merged(SCALED, {"name": "default", "queues": ["default"], "numprocs": 2})
    assert out["errors"] == [] and out["processes"] == 6
    assert out["pools"][0]["numprocs"] == 4 and out["pools"][0]["autoscale"] == SCALED["autoscale"]


@pytest.mark.parametrize("autoscale, message", [
    ({"min": 5, "max": 4}, "autoscale needs 0 <= min <= max (got min 5, max 4)"),
    ({"max": 4}, "autoscale.min is required"),
    ({"min": 1, "max": 100}, "autoscale.max must be between 1 and 64 (got 100)"),
    ({"min": 1, "max": 2, "step": 0}, "autoscale.step must be a whole number >= 1"),
    ({"min": 1, "max": 2, "target_wait": 0}, "autoscale.target_wait must be a positive number of seconds"),
    ({"min": 1, "max": 2, "cooldown": "soon"}, "autoscale.cooldown must be seconds >= 0"),
    ({"min": 1, "max": 2, "burst": 3}, "autoscale: unknown key 'burst'"),
    ([1, 4], "autoscale must be a mapping such as {min: 1, max: 8}"),
])
def test_bad_autoscale_settings_are_named(autoscale, message):
    errors = merged({**SCALED, "autoscale": autoscale})["errors"]
    assert any(message in e for e in errors), errors
    assert len(errors) == 1, errors  # one message per mistake, no echo from numprocs


def test_numprocs_and_autoscale_exclude_each_other():
    errors = merged({**SCALED, "numprocs": 3})["errors"]
    assert errors == ["pool #1 'mail': numprocs and autoscale exclude each other: an autoscaled pool runs between "
                      "autoscale.min and autoscale.max processes (drop numprocs)"]
    assert merged({"name": "x", "queues": ["x"]})["errors"] == ["pool #1 'x': numprocs is required (or autoscale: {min: N, max: M})"]


def test_changing_the_bounds_renames_no_program():
    pool = merged(SCALED)["pools"][0]
    wider = merged({**SCALED, "autoscale": {"min": 2, "max": 6, "step": 3}})["pools"][0]
    names = programs.queue_worker_pool_programs(pool, "queuefleet-", SETTINGS)
    assert len(names) == 4 and programs.queue_worker_pool_programs(wider, "queuefleet-", SETTINGS)[:4] == names
    assert programs.queue_worker_pool_programs(pool, "queuefleet-", SETTINGS, floor=True) == names[:1]
    fixed = merged({"name": "d", "queues": ["d"], "numprocs": 3})["pools"][0]
    assert len(programs.queue_worker_pool_programs(fixed, "queuefleet-", SETTINGS, floor=True)) == 3


def test_the_autoscaler_file_lists_each_autoscaled_pool_with_its_programs_in_slot_order(tmp_path):
    pools = merged(SCALED, {"name": "default", "queues": ["default"], "numprocs": 2})["pools"]
    config = programs.queue_worker_autoscale_config(pools, "queuefleet-", SETTINGS, 5, "unix:///run/supervisor.sock")
    assert config["interval"] == 5.0 and config["supervisor"] == "unix:///run/supervisor.sock"
    (entry,) = config["pools"]
    assert entry == {"name": "mail", "queues": ["mail", "low"], "min": 1, "max": 4, "cooldown": 30.0,
                     "programs": programs.queue_worker_pool_programs(pools[0], "queuefleet-", SETTINGS)}
    # The worker package reads it as written.
    sys.path.insert(0, str(ROOT / "worker" / "src"))
    from queuefleet.autoscaler import load_settings

    path = tmp_path / "autoscale.json"
    path.write_text(json.dumps(config))
    settings = load_settings(path, host="w1")
    assert settings.pools[0].programs == tuple(entry["programs"]) and settings.pools[0].rule.cooldown == 30.0
    assert programs.queue_worker_autoscale_config(pools[1:], "queuefleet-", SETTINGS, 5, "unix:///x")["pools"] == []


def prog(name, state="RUNNING", autostart=True):
    return {"name": name, "state": state, "info": "", "stderr": [], "autostart": autostart}


def test_an_autoscaled_pool_may_run_anywhere_in_its_range_and_its_stopped_processes_are_fine():
    pools = [{"name": "mail", "autoscale": {"min": 1, "max": 3}}, {"name": "default", "numprocs": 1}]
    status = {"running": True, "programs": [
        prog("queuefleet-mail-aaaaaa_00", autostart=False), prog("queuefleet-mail-aaaaaa_01", "STOPPED", False),
        prog("queuefleet-mail-aaaaaa_02", autostart=False), prog("queuefleet-default-bbbbbb_00")]}
    assert checks.postdeploy_supervisor_findings(status, pools=pools) == {"failures": [], "warnings": []}
    status["programs"][0]["state"] = status["programs"][2]["state"] = "STOPPED"
    found = checks.postdeploy_supervisor_findings(status, pools=pools)
    assert found["failures"] == ["pool mail: 0 processes RUNNING, outside its autoscale range 1..3"]
    # A stopped process of a fixed pool (supervisord starts it itself) is still a failure.
    status["programs"][3]["state"] = "STOPPED"
    assert "program queuefleet-default-bbbbbb_00 is STOPPED" in checks.postdeploy_supervisor_findings(status, pools=pools)["failures"][0][0]
    assert checks.postdeploy_expected_workers(pools) == 2


def test_preflight_counts_an_autoscaled_pool_at_max():
    pools = merged(SCALED)["pools"]
    fits = capacity.preflight_capacity(pools, 100000, host="w1")
    (row,) = [r for r in fits["rows"] if r["what"] == "pool mail"]
    assert row["mb"] == 4 * DEFAULTS["memory"] and "autoscale max; min 1" in row["detail"]
    small = capacity.preflight_capacity(merged({**SCALED, "autoscale": {"min": 1, "max": 40}})["pools"], 2048, host="w1")
    assert small["fits"] is False and small["procs"] == 40, small  # 40 x 128 MB does not fit in 2 GB at full scale, whatever min is


@pytest.mark.parametrize("autoscale, message", [
    ({"min": 1, "max": 2, "cooldown": -5}, "autoscale.cooldown must be seconds >= 0 (got -5)"),
    ({"min": 1, "max": 2, "cooldown": float("inf")}, "autoscale.cooldown must be seconds >= 0 (got Infinity)"),
    ({"min": 1, "max": 2, "target_wait": float("nan")}, "autoscale.target_wait must be a positive number of seconds (got NaN)"),
])
def test_settings_the_autoscaler_would_refuse_are_refused_before_the_deploy(autoscale, message):
    """`queue autoscale` refuses these (ScaleRule); the inventory check must say so first, not a
    FATAL autoscaler program after `current` switched."""
    errors = merged({**SCALED, "autoscale": autoscale})["errors"]
    assert len(errors) == 1 and message in errors[0], errors


def test_autoscale_is_no_pool_default():
    out = model.queuefleet_pools([{"name": "d", "queues": ["d"], "numprocs": 2}],
                                 {**DEFAULTS, "autoscale": {"min": 1, "max": 4}}, "queuefleet", 64)
    assert out["errors"] == ["queue_worker_pool_defaults: autoscale cannot be a default: each autoscaled pool says "
                             "autoscale: {min: N, max: M} itself (and has no numprocs)"]


def test_switching_between_numprocs_and_autoscale_renames_every_program():
    """supervisor would stop and re-add each program whose autostart changed, in turn, while the
    deploy waits for every drain; new names start beside the old ones, which drain in the background."""
    scaled = programs.queue_worker_pool_programs(merged(SCALED)["pools"][0], "queuefleet-", SETTINGS)
    fixed_pool = {key: value for key, value in SCALED.items() if key != "autoscale"}
    fixed = programs.queue_worker_pool_programs(merged({**fixed_pool, "numprocs": 4})["pools"][0], "queuefleet-", SETTINGS)
    assert len(scaled) == len(fixed) == 4 and not set(scaled) & set(fixed)
    # ... and a fixed pool's names are those of before autoscaling existed: numprocs alone is left out
    bare = merged({**fixed_pool, "numprocs": 4})["pools"][0]
    shape = {key: value for key, value in bare.items() if key != "numprocs"}
    digest = hashlib.sha1(json.dumps({"pool": shape, "settings": SETTINGS}, sort_keys=True, default=str).encode()).hexdigest()
    assert fixed[0].startswith(f"queuefleet-mail-{digest[:6]}_")
