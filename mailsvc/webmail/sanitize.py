"""HTML mail made safe to show: nh3 (the Rust ammonia sanitiser) with a small allow-list.

What survives: text structure (paragraphs, lists, tables, headings, quotes, pre/code), inline
formatting, links (``http``, ``https``, ``mailto`` only; ``rel="noopener noreferrer"`` and
``target="_blank"`` forced) and images whose source is a ``cid:`` part of the same message
(rewritten to this server's URL for that part) or a small ``data:`` image. Everything else goes:
scripts, event handlers, ``style`` elements and attributes (CSS can exfiltrate and overlay),
forms, frames, SVG, MathML, ``meta``/``base``/``link``, and remote images (tracking pixels):
their ``src`` is dropped and counted so the page can say "N remote images blocked".

The result is still only shown inside ``<iframe sandbox>`` under a CSP without scripts (defence
in depth: a sanitiser bug alone does not run code).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import nh3

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "dd", "del", "div", "dl",
    "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "li", "ol",
    "p", "pre", "q", "s", "small", "span", "strike", "strong", "sub", "sup", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul",
}  # fmt: skip
ATTRIBUTES = {
    "*": {"title", "lang", "dir", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "valign"},
    "th": {"colspan", "rowspan", "valign", "scope"},
    "font": {"color"},
    "ol": {"start"},
}
SCHEMES = {"http", "https", "mailto", "cid", "data"}
MAX_DATA_IMAGE = 64 * 1024
_DATA_IMAGE = re.compile(r"^data:image/(png|gif|jpeg|webp);base64,[A-Za-z0-9+/=\s]+$")


@dataclass(frozen=True, slots=True)
class Cleaned:
    html: str
    blocked_images: int


def clean_html(html: str, cid_url: Callable[[str], str | None]) -> Cleaned:
    """Sanitise ``html``; ``cid_url(content_id)`` gives the URL of a part of this message (or
    None when it has no such part)."""
    blocked = 0

    def attribute(element: str, name: str, value: str) -> str | None:
        nonlocal blocked
        if element == "img" and name == "src":
            if value.lower().startswith("cid:"):
                return cid_url(value[4:].strip("<> "))
            if len(value) <= MAX_DATA_IMAGE and _DATA_IMAGE.match(value):
                return value
            blocked += 1
            return None
        if element == "a" and name == "href":
            lowered = value.strip().lower()
            if lowered.startswith(("http://", "https://", "mailto:")):
                return value
            return None
        return value

    cleaned = nh3.clean(
        html,
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes=SCHEMES,
        attribute_filter=attribute,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
    return Cleaned(cleaned, blocked)
