"""Percent-encode a URL part completely (a password in redis:// or mysql+pymysql:// URLs)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ansible.errors import AnsibleFilterError


def urlquote(value: Any) -> str:
    """Every character but letters, digits and ``-._~`` percent-encoded: unlike Jinja's ``urlencode``
    it encodes ``/``, so a password from ``openssl rand -base64`` cannot end the URL's authority."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise AnsibleFilterError(f"urlquote: expected a string, got {type(value).__name__}")
    return quote(str(value), safe="")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"urlquote": urlquote}
