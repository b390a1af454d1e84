"""The preflight memory estimate (the queuefleet.fleet.preflight_capacity filter, plugins/filter/preflight_capacity.py):
the numbers, the table preflight prints, and the refusals. tests/preflight_cases.sh runs it through the role."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("preflight_capacity", ROOT / "plugins/filter/preflight_capacity.py")
capacity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(capacity)
estimate = capacity.preflight_capacity


def test_a_host_running_everything_fits_and_its_table_lists_pools_then_workers_then_services():
    pools = [{"name": "default", "numprocs": 2}, {"name": "zero", "numprocs": 3, "memory": 0}]
    result = estimate(pools, 24064, host="target", redis_maxmemory="1gb", mysql_innodb_buffer_pool_size="2G")
    assert result["problems"] == []
    assert result["procs"] == 5
    assert result["total_mb"] == 256 + 3 * 512 + 1024 + 2048
    assert result["usable_mb"] == int(24064 * 0.8) and result["fits"] is True
    assert result["table"].splitlines() == [
        "preflight capacity of target: fits: about 4.8 GB needed, 18.8 GB usable (23.5 GB RAM minus 20% headroom)",
        "  pool default              256 MB  2 x 128 MB",
        "  pool zero                 1.5 GB  3 x 512 MB (memory 0 = no limit; counted as 512 MB)",
        "  workers                   1.8 GB  5 processes, about 1.8 GB",
        "  redis                     1.0 GB  maxmemory 1gb",
        "  mariadb                   2.0 GB  innodb_buffer_pool_size 2g",
        "  total                     4.8 GB",
    ]


def test_a_host_that_does_not_fit_says_so_with_the_advice():
    result = estimate([{"name": "huge", "numprocs": 19, "memory": 256}], 4096, host="small", redis_maxmemory="0",
                      mysql_innodb_buffer_pool_size="64M")
    assert result["fits"] is False
    assert result["total_mb"] == 19 * 256 + 64
    lines = result["table"].splitlines()
    assert lines[0] == "preflight capacity of small: DOES NOT FIT: about 4.8 GB needed, 3.2 GB usable (4.0 GB RAM minus 20% headroom)"
    assert "  workers                   4.8 GB  19 processes, about 4.8 GB" in lines
    assert "  redis                       0 MB  maxmemory 0 = no limit; not counted, set redis_maxmemory" in lines
    assert lines[-2].startswith("Lower numprocs or memory of a pool")
    assert lines[-1].startswith("or lower preflight_memory_headroom_percent")


@pytest.mark.parametrize("given, mb", [
    ("256mb", 256), ("1gb", 1024), ("1g", 954), ("100m", 96), ("1000k", 1), ("1024kb", 1), ("1048576", 1), ("3 MB", 3),
])
def test_redis_sizes_follow_redis_units(given, mb):
    """k/m/g are powers of 1000 in redis.conf, kb/mb/gb of 1024; a part MB counts as a whole one."""
    assert estimate([], 100000, redis_maxmemory=given)["total_mb"] == mb


@pytest.mark.parametrize("given, mb", [("128M", 128), ("2G", 2048), ("1T", 1048576), ("1024K", 1), ("134217728", 128)])
def test_mariadb_sizes_are_powers_of_1024(given, mb):
    assert estimate([], 10 ** 7, mysql_innodb_buffer_pool_size=given)["total_mb"] == mb


def test_services_the_host_does_not_run_are_not_counted():
    result = estimate(None, 1000)
    assert result["rows"] == [] and result["total_mb"] == 0 and result["procs"] == 0
    assert result["table"].splitlines() == [
        "preflight capacity of : fits: about 0 MB needed, 800 MB usable (1000 MB RAM minus 20% headroom)",
        "  total                       0 MB",
    ]


def test_headroom_and_the_unlimited_count_are_the_callers():
    result = estimate([{"name": "p", "numprocs": "2", "memory": "0"}], 1000, headroom_percent=50, unlimited_mb=300)
    assert result["rows"] == [{"what": "pool p", "detail": "2 x 300 MB (memory 0 = no limit; counted as 300 MB)", "mb": 600}]
    assert result["usable_mb"] == 500 and result["fits"] is False


def test_the_estimate_fits_up_to_the_last_usable_megabyte():
    assert estimate([{"name": "p", "numprocs": 1, "memory": 800}], 1000)["fits"] is True
    assert estimate([{"name": "p", "numprocs": 1, "memory": 801}], 1000)["fits"] is False


def test_sizes_that_cannot_be_read_are_problems_named_with_the_variable():
    result = estimate([], 4096, redis_maxmemory="lots", mysql_innodb_buffer_pool_size="2 gigs")
    assert result["problems"] == [
        'redis_maxmemory "lots" is not a size such as 256mb or 1gb',
        'mysql_innodb_buffer_pool_size "2 gigs" is not a size such as 128M or 2G',
    ]


@pytest.mark.parametrize("pools, kwargs, message", [
    ("default", {"memtotal_mb": 1000}, "expected the host's merged pools"),
    ([["p"]], {"memtotal_mb": 1000}, "expected the host's merged pools"),
    ([], {"memtotal_mb": "much"}, 'memtotal_mb must be a number (got "much")'),
    ([], {"memtotal_mb": 1000, "headroom_percent": 100}, "headroom_percent must be from 0 to 99 (got 100)"),
    ([], {"memtotal_mb": 1000, "unlimited_mb": True}, "unlimited_mb must be a number (got true)"),
])
def test_bad_input_is_refused_by_name(pools, kwargs, message):
    with pytest.raises(AnsibleFilterError, match="preflight_capacity: " + message.replace("(", r"\(").replace(")", r"\)")):
        estimate(pools, **kwargs)
