"""The worker's init hook: `queue work --init module:function` (QUEUEFLEET_INIT).

The function is called once, with no arguments, in the worker process before it imports a
handler or runs a job: the place for `django.setup()` (`--init django:setup`), logging or an
SDK's configuration. Unlike a handler it is not limited to the `--jobs` modules: it comes from
the worker's command line or environment, which only the operators write, never from Redis.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from .payload import check_job_name


class InitError(Exception):
    """The init hook cannot be loaded: its module does not import, or has no such function."""


def load_init(name: str) -> Callable[[], Any]:
    """The function `name` (`module:function`) names: ValueError when the name is malformed,
    InitError when the module cannot be imported or has no such callable."""
    try:
        check_job_name(name)
    except ValueError:
        raise ValueError(f"expected MODULE:FUNCTION, e.g. django:setup, got {name!r}") from None
    module_name, _, func_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure (a missing package, a settings error) is one message
        raise InitError(f"cannot import {module_name!r}: {exc.__class__.__name__}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise InitError(f"module {module_name!r} has no callable {func_name!r}")
    return func
