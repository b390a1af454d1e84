"""`queue work --init module:function` (QUEUEFLEET_INIT): called once in the worker process,
before any handler module is imported and before the first job; a hook that cannot be loaded
or raises keeps the worker from starting, with one clear line."""

from __future__ import annotations

import pytest

from conftest import executed
from queuefleet import Queue


def test_the_init_hook_runs_once_before_handlers_are_imported(cli, r, redis_url):
    q = Queue.from_url(redis_url)
    q.push("qf_initjobs:record", {"tag": "a"})
    q.push("qf_initjobs:record", {"tag": "b"})
    result = cli.run("work", "--stop-when-empty", "--jobs", "qf_initjobs", "--on-failure", "qf_initjobs:hook",
                     "--init", "qf_testjobs:init_hook")
    seen = executed(r)
    assert [item.split(":")[0] for item in seen] == ["init", "import", "a", "b"], (seen, result.stderr)
    assert len({item.split(":")[1] for item in seen if ":" in item}) == 1, "all in the worker process"


def test_the_init_hook_comes_from_the_environment_too(cli, r, redis_url):
    Queue.from_url(redis_url).push("qf_initjobs:record", {"tag": "a"})
    cli.run("work", "--stop-when-empty", "--jobs", "qf_initjobs", env={"QUEUEFLEET_INIT": "qf_testjobs:init_hook"})
    assert [item.split(":")[0] for item in executed(r)] == ["init", "import", "a"]


@pytest.mark.parametrize(
    ("init", "code", "needle"),
    [
        ("django.setup", 2, "expected MODULE:FUNCTION, e.g. django:setup, got 'django.setup'"),
        ("qf_no_such_module:setup", 2, "queue: --init qf_no_such_module:setup: cannot import 'qf_no_such_module': "
                                       "ModuleNotFoundError: No module named 'qf_no_such_module'"),
        ("qf_testjobs:nothing_here", 2, "queue: --init qf_testjobs:nothing_here: module 'qf_testjobs' has no callable "
                                        "'nothing_here'"),
        ("qf_testjobs:broken_init", 1, "queue: --init qf_testjobs:broken_init raised RuntimeError: the settings are "
                                       "broken; the worker did not start"),
    ],
    ids=["malformed", "no-module", "no-function", "raises"],
)
def test_a_failing_init_hook_keeps_the_worker_from_starting(cli, r, redis_url, init, code, needle):
    Queue.from_url(redis_url).push("qf_initjobs:record", {"tag": "a"})
    result = cli.run("work", "--stop-when-empty", "--jobs", "qf_initjobs", "--init", init, check=False)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert needle in result.stderr
    if init.endswith("broken_init"):  # the hook's own traceback comes first, for the programmer
        assert "Traceback" in result.stderr and result.stderr.rstrip().endswith(needle)
    else:
        assert "Traceback" not in result.stderr
    assert "STARTING" not in result.stdout
    assert executed(r) == [], "no handler module was imported, no job ran"
    assert r.llen("queuefleet:queue:default") == 1
