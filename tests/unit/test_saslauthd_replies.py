"""The saslauthd outcome → reply table: complete, and failures indistinguishable."""

from __future__ import annotations

from idsvc.auth.request import Outcome
from idsvc.wire.saslauthd.protocol import decode_reply, reply_is_ok
from idsvc.wire.saslauthd.server import NO_GENERIC, REPLIES


def test_every_outcome_has_a_reply() -> None:
    assert set(REPLIES) == set(Outcome)


def test_only_ok_says_ok() -> None:
    for outcome, reply in REPLIES.items():
        if reply is None:
            continue
        decoded = decode_reply(reply)
        assert decoded is not None
        assert decoded[1] == len(reply)
        assert reply_is_ok(decoded[0]) is (outcome is Outcome.OK)


def test_failures_share_one_reply_and_tempfail_closes() -> None:
    failures = {REPLIES[o] for o in Outcome if o.is_failure}
    assert failures == {NO_GENERIC}
    # no reply at all: libsasl reports SASL_FAIL, Postfix answers 454 instead of 535
    assert REPLIES[Outcome.TEMPFAIL] is None
