"""PLAIN and LOGIN as pure state machines: table-driven inputs and a differential fuzz oracle."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.model import Secret
from idsvc.sasl import MECHANISMS, Continue, Fail, FailReason, Login, Plain, Verify, create
from idsvc.sasl.base import MAX_IDENTITY_BYTES, MAX_PASSWORD_BYTES, MAX_STEPS
from idsvc.sasl.login import PASSWORD_PROMPT, USERNAME_PROMPT


def test_registry_is_upper_case_and_flags_plaintext() -> None:
    assert set(MECHANISMS) == {"PLAIN", "LOGIN"}
    for name, cls in MECHANISMS.items():
        assert cls.name == name
        assert cls.plaintext is True
    assert isinstance(create("plain"), Plain)
    assert isinstance(create("Login"), Login)
    assert create("CRAM-MD5") is None


PLAIN_CASES: list[tuple[bytes, Verify | FailReason]] = [
    (b"\0alice@example.org\0s3cret", Verify("alice@example.org", Secret("s3cret"))),
    (b"bob\0alice\0pw", Verify("alice", Secret("pw"), authzid="bob")),
    ("\0j\u00fcrgen\0p\u00e4ss".encode(), Verify("j\u00fcrgen", Secret("p\u00e4ss"))),
    (b"\0alice\0pass word with spaces", Verify("alice", Secret("pass word with spaces"))),
    (b"", FailReason.MALFORMED),
    (b"alice", FailReason.MALFORMED),
    (b"\0alice", FailReason.MALFORMED),
    (b"\0alice\0pw\0", FailReason.MALFORMED),
    (b"\0alice\0p\0w", FailReason.MALFORMED),
    (b"a\0b\0c\0d", FailReason.MALFORMED),
    (b"\0\0pw", FailReason.EMPTY_IDENTITY),
    (b"\0alice\0", FailReason.EMPTY_PASSWORD),
    (b"\0\0", FailReason.EMPTY_IDENTITY),
    (b"\0al\xffice\0pw", FailReason.INVALID_UTF8),
    (b"\0alice\0p\xc3", FailReason.INVALID_UTF8),
    (b"\xff\0alice\0pw", FailReason.INVALID_UTF8),
    (b"\0" + b"a" * (MAX_IDENTITY_BYTES + 1) + b"\0pw", FailReason.TOO_LONG),
    (b"\0alice\0" + b"p" * (MAX_PASSWORD_BYTES + 1), FailReason.TOO_LONG),
    (b"\0alice\0" + b"p" * (MAX_PASSWORD_BYTES * 4), FailReason.TOO_LONG),
]


@pytest.mark.parametrize(("message", "expected"), PLAIN_CASES)
def test_plain_table(message: bytes, expected: Verify | FailReason) -> None:
    answer = Plain().start(message)
    if isinstance(expected, Verify):
        assert answer == expected
    else:
        assert answer == Fail(expected)


def test_plain_without_initial_response_sends_empty_challenge() -> None:
    mech = Plain()
    assert mech.start(None) == Continue(b"")
    assert mech.step(b"\0alice\0pw") == Verify("alice", Secret("pw"))
    assert mech.finished
    assert mech.step(b"\0alice\0pw") == Fail(FailReason.FINISHED)


def test_plain_empty_initial_response_is_not_no_response() -> None:
    assert Plain().start(b"") == Fail(FailReason.MALFORMED)


def test_plain_password_is_secret() -> None:
    answer = Plain().start(b"\0alice\0hunter2")
    assert isinstance(answer, Verify)
    assert "hunter2" not in repr(answer)
    assert answer.password.reveal() == "hunter2"


def test_login_flow() -> None:
    mech = Login()
    assert mech.start(None) == Continue(USERNAME_PROMPT)
    assert mech.step(b"alice@example.org") == Continue(PASSWORD_PROMPT)
    assert mech.step(b"s3cret") == Verify("alice@example.org", Secret("s3cret"))
    assert mech.step(b"more") == Fail(FailReason.FINISHED)


def test_login_initial_response_skips_username_prompt() -> None:
    mech = Login()
    assert mech.start(b"alice") == Continue(PASSWORD_PROMPT)
    assert mech.step(b"pw") == Verify("alice", Secret("pw"))


LOGIN_CASES: list[tuple[bytes, bytes, FailReason]] = [
    (b"", b"pw", FailReason.EMPTY_IDENTITY),
    (b"alice", b"", FailReason.EMPTY_PASSWORD),
    (b"al\0ice", b"pw", FailReason.NUL_IN_FIELD),
    (b"alice", b"p\0w", FailReason.NUL_IN_FIELD),
    (b"\xfe", b"pw", FailReason.INVALID_UTF8),
    (b"alice", b"\xc3(", FailReason.INVALID_UTF8),
    (b"a" * (MAX_IDENTITY_BYTES + 1), b"pw", FailReason.TOO_LONG),
    (b"alice", b"p" * (MAX_PASSWORD_BYTES + 1), FailReason.TOO_LONG),
]


@pytest.mark.parametrize(("user", "password", "reason"), LOGIN_CASES)
def test_login_table(user: bytes, password: bytes, reason: FailReason) -> None:
    mech = Login()
    mech.start(None)
    first = mech.step(user)
    if isinstance(first, Fail):
        assert first == Fail(reason)
        return
    assert first == Continue(PASSWORD_PROMPT)
    assert mech.step(password) == Fail(reason)


def test_start_twice_fails() -> None:
    mech = Login()
    mech.start(None)
    assert mech.start(None) == Fail(FailReason.FINISHED)


def test_steps_are_bounded() -> None:
    class Chatty(Login):
        max_steps = 1000  # capped by MAX_STEPS whatever a mechanism claims

        def _step(self, data: bytes) -> Continue:
            return Continue(b"again")

    mech = Chatty()
    answers = [mech.step(b"x") for _ in range(MAX_STEPS + 3)]
    assert answers[:MAX_STEPS] == [Continue(b"again")] * MAX_STEPS
    assert answers[MAX_STEPS] == Fail(FailReason.TOO_MANY_STEPS)
    assert all(a == Fail(FailReason.FINISHED) for a in answers[MAX_STEPS + 1 :])


# --- differential fuzzing: a generated client message yields Verify only with exactly the
# credentials that were encoded, and anything else yields Fail -----------------------------------

_field = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40
)


@given(authzid=_field, authcid=_field, password=_field)
def test_plain_oracle_well_formed(authzid: str, authcid: str, password: str) -> None:
    message = b"\0".join(x.encode() for x in (authzid, authcid, password))
    answer = Plain().start(message)
    if authcid and password:
        assert answer == Verify(authcid, Secret(password), authzid or None)
    else:
        assert isinstance(answer, Fail)


@given(st.binary(max_size=300))
def test_plain_oracle_arbitrary_bytes(message: bytes) -> None:
    answer = Plain().start(message)
    assert isinstance(answer, Verify | Fail)
    if isinstance(answer, Verify):
        # re-encoding the verified credentials must give back exactly the client's bytes
        again = b"\0".join(
            [
                (answer.authzid or "").encode(),
                answer.authcid.encode(),
                answer.password.reveal().encode(),
            ]
        )
        assert again == message
        assert answer.authcid
        assert answer.password.reveal()


@given(user=st.binary(max_size=80), password=st.binary(max_size=80), initial=st.booleans())
def test_login_oracle(user: bytes, password: bytes, initial: bool) -> None:
    mech = Login()
    if initial:
        answer = mech.start(user)
    else:
        assert mech.start(None) == Continue(USERNAME_PROMPT)
        answer = mech.step(user)
    if isinstance(answer, Continue):
        answer = mech.step(password)
    assert isinstance(answer, Verify | Fail)
    if isinstance(answer, Verify):
        assert answer.authcid.encode() == user
        assert answer.password.reveal().encode() == password
        assert user
        assert password
        assert b"\0" not in user + password
        assert answer.authzid is None
    else:
        try:
            user.decode()
            password.decode()
            valid = True
        except UnicodeDecodeError:
            valid = False
        assert not (valid and user and password and b"\0" not in user + password)
