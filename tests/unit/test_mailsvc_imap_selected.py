"""``Selected.msns``: the same sequence numbers as one ``msn`` per UID, in any order."""

from __future__ import annotations

from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from mailsvc.imap.selected import Selected
from mailsvc.mailbox.folder import Folder


@given(
    st.lists(st.integers(1, 60), unique=True).map(sorted),
    st.lists(st.integers(0, 70), max_size=80),
)
def test_msns_agree_with_msn(view: list[int], asked: list[int]) -> None:
    sel = Selected(cast(Folder, None), readonly=True, uids=view)  # the folder is never read
    assert sel.msns(asked) == [sel.msn(uid) for uid in asked]
    assert sel.msns(view) == list(range(1, len(view) + 1))
