"""The one error the identity clients raise for "no definite answer" (always temporary)."""

from __future__ import annotations


class Unavailable(Exception):
    """The server gave no definite answer (down, timed out, malformed, TEMP): answer 4xx."""
