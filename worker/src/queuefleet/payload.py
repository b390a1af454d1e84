"""The job payload: what a producer writes to Redis and a worker reads back.

Payloads are JSON (never pickle): anyone who can write to Redis can write a
payload, so decoding one must never run code, and every field is checked
before the worker acts on it (a bad payload is refused, never a crash).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

JOB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")

MAX_DELAY = 10 * 365 * 86400.0  # seconds: a delay or backoff longer than ten years is a mistake
MAX_TIMEOUT = 30 * 86400.0  # seconds: the longest per-attempt timeout
MAX_PAYLOAD = 4 * 1024 * 1024  # bytes of a payload's JSON, by default: refused at push and at decode
KEEP_PAYLOAD = 64 * 1024  # characters of a payload kept in failed jobs when the whole one cannot be stored
MAX_ERRORS = 10  # failed attempts remembered in a payload (the last ones)
MAX_ERROR_CHARS = 1000  # of each remembered error

_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class PayloadError(ValueError):
    """A payload that cannot be decoded into a job."""


class PayloadTooLarge(PayloadError):
    """A payload over the size limit (Queue(max_payload=...), --max-payload)."""


_valid_jobs: set[str] = set()
_valid_queues: set[str] = set()


def _cached_check(value: Any, pattern: re.Pattern[str], cache: set[str], message: str) -> str:
    if isinstance(value, str) and value in cache:
        return value
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{message}, got {_shown(value)}")
    if len(cache) < 10_000:
        cache.add(value)
    return value


def check_job_name(job: str) -> str:
    return _cached_check(job, JOB_NAME, _valid_jobs, "job must look like 'package.module:function'")


def check_queue_name(queue: str) -> str:
    return _cached_check(queue, QUEUE_NAME, _valid_queues, "queue name must be 1-128 of A-Z a-z 0-9 _ . -")


def check_pool_name(name: str) -> str:
    """A pool's name as heartbeats, metrics and supervisor programs carry it."""
    if not name or not all(c.isalnum() or c in "_.-" for c in name):
        raise ValueError(f"pool names are letters, digits, '_', '.' and '-', got {name!r}")
    return name


def _check_id_like(value: str, what: str) -> str:
    if not isinstance(value, str) or not JOB_ID.fullmatch(value):
        raise ValueError(f"{what} must be 1-128 of A-Z a-z 0-9 _ . : - (starting with a letter or digit), got {_shown(value)}")
    return value


def check_job_id(job_id: str) -> str:
    return _check_id_like(job_id, "job id")


def check_unique_key(key: str) -> str:
    return _check_id_like(key, "unique_key")


def check_seconds(name: str, value: Any, *, maximum: float, allow_zero: bool = True) -> float:
    """A finite number of seconds in [0, maximum] (or (0, maximum]); a clear ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {_shown(value)}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero) or value > maximum:
        low = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {low} and at most {maximum:g}, got {value!r}")
    return float(value)


def _shown(value: Any) -> str:
    """A value for an error message: short, and one line (a queue name with a newline shows it)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_backoff(value: str | int | float | list[int | float] | tuple[int | float, ...] | None) -> list[float]:
    """Turn '10,60,300', 10 or [10, 60] into a list of non-negative seconds."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        parts: list[Any] = [p.strip() for p in value.split(",")]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        parts = [value]
    else:
        parts = list(value)
    seconds = []
    for part in parts:
        try:
            number = float(part)
        except (TypeError, ValueError):
            raise ValueError(f"backoff must be seconds like '10' or '10,60,300', got {value!r}") from None
        if number < 0 or not math.isfinite(number) or number > MAX_DELAY:
            raise ValueError(f"backoff seconds must be a finite number >= 0 and at most {MAX_DELAY:g}, got {part!r}")
        seconds.append(number)
    if len(seconds) > 100:
        raise ValueError(f"backoff lists at most 100 delays, got {len(seconds)}")
    return seconds


def new_id() -> str:
    """A random (version 4) UUID string."""
    return str(uuid.uuid4())


def check_payload_size(payload: str | bytes, limit: int, whose: str) -> None:
    """PayloadTooLarge when `payload` is over `limit` bytes (UTF-8); `whose` names the setting."""
    size = len(payload)
    if isinstance(payload, str) and size <= limit < 4 * size:  # a character is 1 to 4 bytes: count only when it matters
        size = len(payload.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise PayloadTooLarge(f"job payload is {size:,} bytes, over the limit of {limit:,} bytes ({whose}); keep large "
                              "data elsewhere and pass a reference to it")


def check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1024:
        raise ValueError(f"max_payload must be a whole number of bytes >= 1024, got {_shown(limit)}")
    return limit


def encode_data(data: Any) -> str:
    try:
        return _encoder.encode(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"job data must be JSON-serialisable: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise PayloadError(f"payload contains {name}, which JSON does not allow")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError(f"payload contains the number {text[:40]}, too large for a float")
    return value


def _optional_number(doc: dict[str, Any], key: str, *, maximum: float, allow_zero: bool) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    return check_seconds(key, value, maximum=maximum, allow_zero=allow_zero)


def error_summary(error: str, limit: int = MAX_ERROR_CHARS) -> str:
    """The last meaningful line of an error (SQLAlchemy appends a link line: skip it)."""
    lines = [line for line in error.strip().splitlines() if line.strip() and not line.lstrip().startswith("(Background on this error")]
    last = lines[-1] if lines else error
    return last if len(last) <= limit else last[: limit - 3] + "..."


# JSON's 1e999 parses as inf and NaN/Infinity are not JSON: both are refused while decoding.
_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


@dataclass
class Job:
    """One unit of work. `attempts` and `lost` are kept by Redis, not in the JSON."""

    id: str
    job: str
    data: Any
    queue: str
    max_tries: int | None = None
    timeout: float | None = None
    backoff: list[float] = field(default_factory=list)
    pushed_at: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    # Set while the job waits in Redis because storing its final failure failed (database
    # outage): the worker then stores this error instead of running the job again.
    failure: str | None = None
    holds: int = 0  # how many times storing the failure was put off
    lost: int = 0
    # Set (with `failure`) just before the failure callbacks are called: they are never called again.
    notified: bool = False

    @classmethod
    def new(
        cls,
        job: str,
        data: Any,
        queue: str,
        *,
        tries: int | None = None,
        timeout: float | None = None,
        backoff: Any = None,
        id: str | None = None,
    ) -> "Job":
        check_job_name(job)
        check_queue_name(queue)
        if id is not None:
            check_job_id(id)
        if tries is not None and (not isinstance(tries, int) or isinstance(tries, bool) or tries < 0):
            raise ValueError(f"tries must be an integer >= 0 (0 = unlimited), got {tries!r}")
        if timeout is not None:
            check_seconds("timeout", timeout, maximum=MAX_TIMEOUT, allow_zero=False)
        return cls(
            id=id or new_id(),
            job=job,
            data=data,
            queue=queue,
            max_tries=tries,
            timeout=timeout,
            backoff=parse_backoff(backoff),
            pushed_at=time.time(),
        )

    def note_error(self, attempt: int, error: str) -> None:
        """Remember a failed attempt (only the last MAX_ERRORS, each cut to MAX_ERROR_CHARS)."""
        if len(error) > MAX_ERROR_CHARS:
            error = error[: MAX_ERROR_CHARS - 3] + "..."
        self.errors.append({"attempt": attempt, "at": round(time.time(), 3), "error": error})
        del self.errors[:-MAX_ERRORS]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job": self.job,
            "data": self.data,
            "queue": self.queue,
            "max_tries": self.max_tries,
            "timeout": self.timeout,
            "backoff": self.backoff,
            "pushed_at": self.pushed_at,
            "errors": self.errors,
            "attempts": self.attempts,
            **({"failure": self.failure, "holds": self.holds, "notified": self.notified} if self.failure is not None else {}),
        }

    def encode(self) -> str:
        try:
            return _encoder.encode(self.to_dict())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"job data must be JSON-serialisable: {exc}") from None

    @classmethod
    def decode(cls, raw: bytes | str, *, attempts: int = 0, lost: int = 0, expect_id: str | None = None,
               max_bytes: int | None = None) -> "Job":
        """Decode and check a payload; PayloadError (whose message never quotes job data) if it is not a
        valid job, PayloadTooLarge (before any parsing) if it is over `max_bytes`."""
        if max_bytes is not None:
            check_payload_size(raw, max_bytes, "the worker's --max-payload")
        try:
            doc = _decoder.decode(raw.decode() if isinstance(raw, bytes) else raw)
        except PayloadError:
            raise
        except RecursionError:
            raise PayloadError("payload is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError(f"payload is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise PayloadError("payload is not a JSON object")
        if doc.get("truncated") is True:
            raise PayloadError("payload was too large to store and only its start was kept: it cannot be run")
        missing = [k for k in ("id", "job", "queue") if k not in doc]
        if missing:
            raise PayloadError(f"payload lacks {', '.join(missing)}")
        try:
            if not isinstance(doc["id"], str):
                raise ValueError("id must be a string")
            if expect_id is not None and doc["id"] != expect_id:
                raise ValueError(f"its id {_shown(doc['id'])} is not the id it is stored under")
            check_job_name(doc["job"])
            check_queue_name(doc["queue"])
            max_tries = doc.get("max_tries")
            if max_tries is not None and (not isinstance(max_tries, int) or isinstance(max_tries, bool) or max_tries < 0):
                raise ValueError("max_tries must be an integer >= 0")
            timeout = _optional_number(doc, "timeout", maximum=MAX_TIMEOUT, allow_zero=False)
            pushed_at = doc.get("pushed_at")
            if not (type(pushed_at) is float and 0.0 <= pushed_at <= 1e11):  # the common case, checked cheaply
                pushed_at = _optional_number(doc, "pushed_at", maximum=1e11, allow_zero=True) or 0.0
            errors = doc.get("errors") or []
            if not isinstance(errors, list) or not all(isinstance(e, dict) for e in errors):
                raise ValueError("errors must be a list of objects")
            failure = doc.get("failure")
            if failure is not None and not isinstance(failure, str):
                raise ValueError("failure must be a string")
            notified = doc.get("notified", False)
            if not isinstance(notified, bool):
                raise ValueError("notified must be true or false")
            holds = doc.get("holds") or 0
            if not isinstance(holds, int) or isinstance(holds, bool) or holds < 0:
                raise ValueError("holds must be an integer >= 0")
            return cls(
                id=doc["id"],
                job=doc["job"],
                data=doc.get("data"),
                queue=doc["queue"],
                max_tries=max_tries,
                timeout=timeout,
                backoff=parse_backoff(doc.get("backoff")),
                pushed_at=pushed_at,
                errors=errors[-MAX_ERRORS:],
                attempts=attempts,
                lost=lost,
                failure=failure,
                holds=holds,
                notified=notified,
            )
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"payload is malformed: {exc}") from None


def truncated_payload(payload: str) -> str:
    """A JSON stand-in for a payload too large to store: what it was, and its first characters."""
    doc: dict[str, Any] = {}
    try:
        original = json.loads(payload)
        if isinstance(original, dict):
            doc = {k: original[k] for k in ("id", "job", "queue") if isinstance(original.get(k), str)}
            if isinstance(original.get("pushed_at"), (int, float)):
                doc["pushed_at"] = original["pushed_at"]
    except (ValueError, RecursionError):
        pass
    doc.update({
        "truncated": True,
        "note": f"payload of {len(payload)} characters was too large to store; only its start is kept",
        "characters": len(payload),
        "sha256": hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest(),
        "head": payload[:KEEP_PAYLOAD],
    })
    return json.dumps(doc, ensure_ascii=True)
