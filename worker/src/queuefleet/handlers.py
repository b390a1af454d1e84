"""Resolving `package.module:function` names, only inside the allowed modules.

Whoever can write to Redis can name any job. The worker therefore imports a
handler only when its module is one of the allowed prefixes (or inside one):
with ``--jobs myapp.jobs`` the names ``myapp.jobs:f`` and ``myapp.jobs.mail:f``
resolve, ``os:system`` and ``myapp.jobsx:f`` do not. The callable found must itself
be defined in an allowed module (its ``__module__``): a name an allowed module only
imports (``from subprocess import run``) is refused, and so is a private name
(``_helper``, ``__loader__``, a ``_private`` module below the allowed prefix).
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

    def _prefix_of(self, module: str) -> str | None:
        """The allowed prefix `module` is (or is inside), None when there is none."""
        for prefix in (*ALWAYS_ALLOWED, *self.allowed):
            if module == prefix or module.startswith(prefix + "."):
                return prefix
        return None

    def is_allowed(self, module: str) -> bool:
        return self._prefix_of(module) is not None

    def _refuse(self, job: str, why: str) -> JobNotAllowed:
        return JobNotAllowed(f"job {job!r} is not allowed: {why} (allowed job modules: {', '.join(self.allowed) or 'none'}; "
                             "set --jobs / QUEUEFLEET_JOBS)")

    def resolve(self, job: str) -> Handler:
        handler = self._cache.get(job)
        if handler is not None:
            return handler
        module_name, _, func_name = job.partition(":")
        prefix = self._prefix_of(module_name)
        if prefix is None:
            raise self._refuse(job, f"module {module_name!r} is outside the allowed job modules")
        below = module_name[len(prefix):].split(".")
        private = [name for name in (*below, func_name) if name.startswith("_")]
        if private:
            raise self._refuse(job, f"{private[0]!r} is a private name")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a module that fails to import is a permanent failure too
            raise HandlerNotFound(f"cannot import {module_name!r} for job {job!r}: {exc}") from exc
        handler = getattr(module, func_name, None)
        if not callable(handler):
            raise HandlerNotFound(f"module {module_name!r} has no callable {func_name!r} (job {job!r})")
        defined_in = getattr(handler, "__module__", None)
        if not isinstance(defined_in, str) or not self.is_allowed(defined_in):
            raise self._refuse(job, f"{module_name}.{func_name} is {getattr(handler, '__qualname__', func_name)!s} of "
                                    f"module {defined_in!r}, which {module_name!r} only imports; name it where it is "
                                    "defined, inside the allowed job modules")
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
