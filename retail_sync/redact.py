"""Credentials out of what we print and log: ``user:password@`` inside any URL becomes
``user:***@`` (``:***@`` for a password-only Redis URL), and a ``password=`` query parameter
``password=***``. Everything else in the URL stays, so a log still says which host is meant.
"""

from __future__ import annotations

import re

# scheme://[user][:password]@  -- the userinfo may hold anything but '/', '@' and whitespace
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/@:\s]*):(?P<pw>[^/@\s]*)@")
# scheme://token@host (no colon): a bare token is a credential too
_TOKEN = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<token>[^/@:\s]+)@")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|secret|token|api_key|apikey|access_token)=)[^&;#\s]*",
    re.IGNORECASE)
MASK = "***"


def mask_url(text: str) -> str:
    """``text`` with the credentials of every URL in it masked (works on a comma-separated list
    of URLs and on a URL inside a longer message)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@" if m["pw"] else m[0], text)
    text = _TOKEN.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)


def mask_value(value: object) -> object:
    """A setting's value as it may be shown: strings (and URL objects) through ``mask_url``."""
    if isinstance(value, str):
        return mask_url(value)
    if value is not None and type(value).__name__ in ("AnyHttpUrl", "Url", "HttpUrl", "URL"):
        return mask_url(str(value))
    return value
