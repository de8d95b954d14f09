"""Failed-token throttling (hardening item 5): a valid token is never refused because others
failed from the same address, failures are counted per *client* (X-Forwarded-For honoured only
from a trusted proxy, right-most untrusted hop), and a forged header from an untrusted peer
changes nothing. Runs on both backends through the ``api`` fixture."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.api import create_app
from idsvc.api.security import client_address, parse_networks
from idsvc.config import ApiSettings
from tests.api.conftest import Api

PEER = "198.51.100.7"  # the ASGI client address of the ``api`` fixture
BOGUS = {"Authorization": "Bearer idsvc_0123456789abcdef_" + "1" * 64}
LIMIT = 10  # api.token_failures default


async def _fail(client: httpx.AsyncClient, **headers: str) -> httpx.Response:
    return await client.get("/api/v1/domains", headers={**BOGUS, **headers})


async def test_valid_admin_token_is_never_throttled_by_failures_from_its_address(
    api: Api,
) -> None:
    for _ in range(LIMIT):
        assert (await _fail(api.client)).status_code == 401
    r = await _fail(api.client)
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # the valid admin token from the very same address goes through, repeatedly
    for _ in range(3):
        r = await api.call("admin", "GET", "/api/v1/domains")
        assert r.status_code == 200, r.text
    assert (await _fail(api.client)).status_code == 429  # failures stay throttled
    assert (await api.client.get("/api/v1/domains")).status_code == 401  # no token: not counted


async def test_throttle_window_expires(api: Api) -> None:
    from idsvc.api.security import SlidingLimiter

    now = [1000.0]
    api.app.state.idsvc.token_failures = SlidingLimiter(3, 60.0, clock=lambda: now[0])
    for _ in range(3):
        assert (await _fail(api.client)).status_code == 401
    r = await _fail(api.client)
    assert (r.status_code, r.headers["retry-after"]) == (429, "60")
    now[0] += 61
    assert (await _fail(api.client)).status_code == 401


@asynccontextmanager
async def _behind_proxy(api: Api, proxies: tuple[str, ...]) -> AsyncIterator[httpx.AsyncClient]:
    """A second app over the same runtime and state, configured with ``trusted_proxies``."""
    settings = api.settings.model_copy(
        update={"api": api.settings.api.model_copy(update={"trusted_proxies": proxies})}
    )
    app = create_app(settings, api.runtime, api.state)
    transport = httpx.ASGITransport(app=app, client=(PEER, 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://idsvc.test") as c:
            yield c
    finally:
        app.state.idsvc.close()


async def test_behind_a_trusted_proxy_clients_are_throttled_apart(api: Api) -> None:
    async with _behind_proxy(api, (f"{PEER}/32", "10.0.0.0/8")) as proxy:
        a = {"X-Forwarded-For": "203.0.113.5"}
        for _ in range(LIMIT):
            assert (await _fail(proxy, **a)).status_code == 401
        assert (await _fail(proxy, **a)).status_code == 429
        # client A forging a left-most hop is still client A (the proxy appended its address)
        forged = {"X-Forwarded-For": "192.0.2.99, 203.0.113.5"}
        assert (await _fail(proxy, **forged)).status_code == 429
        # ... also through a second trusted proxy hop
        chained = {"X-Forwarded-For": "192.0.2.99, 203.0.113.5, 10.1.2.3"}
        assert (await _fail(proxy, **chained)).status_code == 429
        # client B behind the same proxy is not affected
        b = {"X-Forwarded-For": "203.0.113.6"}
        assert (await _fail(proxy, **b)).status_code == 401
        # and neither is a valid admin token from client A
        r = await proxy.get("/api/v1/domains", headers={**api.auth("admin"), **a})
        assert r.status_code == 200


async def test_forged_forwarded_for_from_an_untrusted_peer_is_ignored(api: Api) -> None:
    # the api fixture trusts no proxy: every failure counts for the TCP peer, whatever it claims
    for i in range(LIMIT):
        r = await _fail(api.client, **{"X-Forwarded-For": f"203.0.113.{i + 1}"})
        assert r.status_code == 401
    r = await _fail(api.client, **{"X-Forwarded-For": "203.0.113.200"})
    assert r.status_code == 429
    # a peer not in a configured list is not trusted either
    async with _behind_proxy(api, ("192.0.2.0/24",)) as other:
        for i in range(LIMIT):
            assert (await _fail(other, **{"X-Forwarded-For": f"2001:db8::{i}"})).status_code == 401
        assert (await _fail(other, **{"X-Forwarded-For": "2001:db8::ff"})).status_code == 429


PROXIES = parse_networks(("127.0.0.1/32", "10.0.0.0/8", "fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("192.0.2.1", ["203.0.113.5"], "192.0.2.1"),  # untrusted peer: header ignored
        ("127.0.0.1", [], "127.0.0.1"),  # trusted peer, no header: the peer
        ("127.0.0.1", ["203.0.113.5"], "203.0.113.5"),
        ("127.0.0.1", ["1.1.1.1, 203.0.113.5"], "203.0.113.5"),  # right-most untrusted
        ("127.0.0.1", ["1.1.1.1", "203.0.113.5, 10.9.9.9"], "203.0.113.5"),  # several headers
        ("127.0.0.1", ["10.1.1.1, 10.2.2.2"], "10.1.1.1"),  # only proxies: the left-most
        ("127.0.0.1", ["203.0.113.5, garbage"], "127.0.0.1"),  # malformed: stop at the proxy
        ("127.0.0.1", ["203.0.113.5, , 10.0.0.1"], "10.0.0.1"),  # empty hop is malformed
        ("127.0.0.1", ["unknown"], "127.0.0.1"),
        ("127.0.0.1", [" 2001:db8::1 "], "2001:db8::1"),
        ("::ffff:127.0.0.1", ["203.0.113.5"], "203.0.113.5"),  # IPv4-mapped peer
        ("fd00::1", ["::ffff:203.0.113.5"], "203.0.113.5"),
        ("127.0.0.1", ["203.0.113.5:4711"], "127.0.0.1"),  # host:port is not an address
        ("not-an-ip", ["203.0.113.5"], "not-an-ip"),
        (None, ["203.0.113.5"], "local"),
    ],
)
def test_client_address_table(peer: str | None, forwarded: list[str], client: str) -> None:
    assert client_address(peer, forwarded, PROXIES) == client


def test_client_address_with_no_proxies_is_the_peer() -> None:
    assert client_address("127.0.0.1", ["203.0.113.5"], ()) == "127.0.0.1"


def test_trusted_proxies_setting_is_validated() -> None:
    assert ApiSettings(trusted_proxies=("10.1.2.3/8", "::1")).trusted_proxies == (
        "10.0.0.0/8",
        "::1/128",
    )
    with pytest.raises(ValueError, match="trusted_proxies"):
        ApiSettings(trusted_proxies=("10.0.0.0/33",))
    with pytest.raises(ValueError, match="trusted_proxies"):
        ApiSettings(trusted_proxies=("proxy.example",))


def _canonical(text: str) -> str | None:
    try:
        addr = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
    return str(mapped or addr)


@given(
    peer=st.ip_addresses().map(str),
    hops=st.lists(st.one_of(st.ip_addresses().map(str), st.text(max_size=20)), max_size=40),
)
def test_client_address_is_the_peer_or_a_forwarded_hop(peer: str, hops: list[str]) -> None:
    header = ",".join(hops)
    got = client_address(peer, [header], PROXIES)
    peer_ip = ipaddress.ip_address(_canonical(peer) or peer)
    if not any(peer_ip.version == net.version and peer_ip in net for net in PROXIES):
        assert got == peer  # an untrusted peer's header never matters
    else:
        assert got in {_canonical(peer)} | {_canonical(hop) for hop in header.split(",")}
