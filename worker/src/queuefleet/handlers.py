"""Resolving `package.module:function` names, only inside the allowed modules.

Whoever can write to Redis can name any job. The worker therefore imports a
handler only when its module is one of the allowed prefixes (or inside one):
with ``--jobs myapp.jobs`` the names ``myapp.jobs:f`` and ``myapp.jobs.mail:f``
resolve, ``os:system`` and ``myapp.jobsx:f`` do not.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .context import ON_FAILURE_ATTR
from .payload import check_job_name

Handler = Callable[..., Any]


@dataclass(frozen=True)
class HandlerSpec:
    """A resolved handler: the function, whether it takes a JobContext, and its failure callback."""

    func: Handler
    takes_context: bool = False
    on_failure: Callable[..., Any] | None = None


def takes_context(func: Handler) -> bool:
    """True when `func`'s second positional parameter has no default: `def f(data, job)`.
    One-argument handlers, and handlers whose extra parameters have defaults, get the data only."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 and positional[1].default is inspect.Parameter.empty


class JobNotAllowed(Exception):
    """The job names a module outside the allow-list: a permanent failure."""


class HandlerNotFound(Exception):
    """The job's module or function cannot be loaded: a permanent failure."""


def parse_allowed(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    prefixes = tuple(p.strip() for p in items if p.strip())
    for prefix in prefixes:
        check_job_name(prefix + ":f")  # same identifier rules as a module path
    return prefixes


# Modules every worker may run, whatever --jobs says: queuefleet's own no-op
# canary for health checks (it runs no app code and takes no input).
ALWAYS_ALLOWED = ("queuefleet.canary",)


class HandlerRegistry:
    """Imports and caches handlers, refusing anything outside `allowed`."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = tuple(allowed)
        self._cache: dict[str, Handler] = {}
        self._specs: dict[str, HandlerSpec] = {}

    def is_allowed(self, module: str) -> bool:
        return module in ALWAYS_ALLOWED or any(module == p or module.startswith(p + ".") for p in self.allowed)

    def resolve(self, job: str) -> Handler:
        handler = self._cache.get(job)
        if handler is not None:
            return handler
        module_name, _, func_name = job.partition(":")
        if not self.is_allowed(module_name):
            raise JobNotAllowed(
                f"job {job!r} is not allowed: module {module_name!r} is outside the allowed "
                f"job modules ({', '.join(self.allowed) or 'none'}; set --jobs / QUEUEFLEET_JOBS)"
            )
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a module that fails to import is a permanent failure too
            raise HandlerNotFound(f"cannot import {module_name!r} for job {job!r}: {exc}") from exc
        handler = getattr(module, func_name, None)
        if not callable(handler):
            raise HandlerNotFound(f"module {module_name!r} has no callable {func_name!r} (job {job!r})")
        self._cache[job] = handler
        return handler

    def spec(self, job: str) -> HandlerSpec:
        """`resolve`, plus how to call the handler and its failure callback (checked against the allow-list)."""
        spec = self._specs.get(job)
        if spec is not None:
            return spec
        func = self.resolve(job)
        callback = getattr(func, ON_FAILURE_ATTR, None)
        if callback is not None:
            self.check_callable(callback, f"the failure callback of {job!r}")
        spec = self._specs[job] = HandlerSpec(func, takes_context(func), callback)
        return spec

    def check_callable(self, func: Callable[..., Any], what: str) -> None:
        """A callback given as a function object must live in an allowed module too."""
        module = getattr(func, "__module__", None) or "?"
        if not callable(func) or not self.is_allowed(module):
            raise JobNotAllowed(f"{what} ({getattr(func, '__qualname__', func)!r} in module {module!r}) is outside "
                                f"the allowed job modules ({', '.join(self.allowed) or 'none'})")
