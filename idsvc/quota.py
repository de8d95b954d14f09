"""Mailbox quota usage from the Maildir++ ``maildirsize`` file (Dovecot ``quota = maildir``).

The file's first line is the quota definition (``<bytes>S,<count>C``); every following line is
``<bytes> <messages>`` — deltas that add up to the current usage. Dovecot rewrites the file when
it grows past 5120 bytes, so it stays small; we read at most :data:`MAX_SIZE` bytes and treat a
larger, missing, unreadable or malformed file as "usage unknown" (None): the caller then does
not refuse anything on quota grounds. Blocking file I/O: call it off the event loop.
"""

from __future__ import annotations

from pathlib import Path

MAX_SIZE = 64 * 1024


def maildir_usage(maildir: Path) -> int | None:
    """Bytes used by the Maildir at ``maildir`` according to its ``maildirsize``, or None."""
    try:
        with (maildir / "maildirsize").open("rb") as fh:
            data = fh.read(MAX_SIZE + 1)
    except OSError:
        return None
    if len(data) > MAX_SIZE:
        return None
    lines = data.split(b"\n")[1:]
    total = 0
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        try:
            total += int(fields[0])
        except ValueError:
            return None
    return max(total, 0)
