"""Quote a value for redis.conf or sentinel.conf, as Redis's own parser reads it back."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError


def redis_quote(value: Any) -> str:
    """A double-quoted string with backslash, quote and every non-printable byte escaped (\\xHH),
    so a password with spaces, quotes or '#' is one argument in a Redis config file."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise AnsibleFilterError(f"redis_quote: expected a string, got {type(value).__name__}")
    out = []
    for byte in str(value).encode():
        char = chr(byte)
        if char in '\\"':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"redis_quote": redis_quote}
