"""Text that is safe to print or log: control characters escaped, length capped.

Everything procgraph writes to a terminal or a log line that may come from outside (a
message key, a stream field, an exception about hostile input) goes through
:func:`printable`, so an entry cannot forge a log line, move the cursor or fill a disk.
"""

from __future__ import annotations

import re

#: the default cap of one printed value or reason, in characters
DEFAULT_LIMIT = 300
# C0 and C1 controls, DEL, lone surrogates, and the Unicode line/paragraph separators
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    if ch in _SHORT:
        return _SHORT[ch]
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def printable(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` as one line of plain text: controls escaped, cut to about ``limit`` chars.

    Bytes are decoded as UTF-8 with invalid bytes shown as ``\\xNN``. Only the start of a
    huge value is looked at, and the cut is said with the size of the whole value, e.g.
    ``abc...[cut, 10485760 bytes in all]``.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        size, unit = len(value), "bytes"
        text = bytes(value[: 4 * limit + 4]).decode("utf-8", "backslashreplace")
    else:
        full = value if isinstance(value, str) else str(value)
        size, unit = len(full), "chars"
        text = full[: 4 * limit + 4]
    text = _UNSAFE.sub(_escape, text)
    if len(text) > limit:  # a cut prefix is always longer than limit
        return f"{text[:limit]}...[cut, {size} {unit} in all]"
    return text
