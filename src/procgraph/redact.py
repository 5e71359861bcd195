"""Credentials never printed: broker URLs and error texts with passwords masked."""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:password@  or  scheme://:password@  or  scheme://password@ (redis-py reads
# a lone userinfo as a password when it has no colon, so that is masked too)
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/@\s]*)@", re.I)
# password=... in a query string or a key=value text
_QUERY = re.compile(r"(?P<key>\b(?:password|passwd|pass|token|secret)=)[^&\s'\"]+", re.I)


def _mask_userinfo(m: re.Match[str]) -> str:
    user, sep, _ = m.group("userinfo").partition(":")
    kept = f"{user}:{MASK}" if sep else MASK
    return f"{m.group('scheme')}{kept}@"


def redact(text: str) -> str:
    """``text`` with the password of every URL in it and every ``password=`` masked."""
    return _QUERY.sub(lambda m: m.group("key") + MASK, _USERINFO.sub(_mask_userinfo, text))


def redact_url(url: str) -> str:
    """A broker URL fit to print: ``redis://user:***@host:6379/0``."""
    return redact(url)
