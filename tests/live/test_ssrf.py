"""The SSRF guard (tlc_jax/live/ssrf.py) against a real HTTP server on loopback.

Nothing here needs the internet: forbidden addresses are refused before any connection
(checked with a backend that fails the test if it is asked to connect), and the names
other than "localhost" are resolved by a stand-in resolver."""

import asyncio
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import httpcore
import httpx
import pytest

from tlc_jax.live.ssrf import (AllowList, Forbidden, GuardedBackend, check_address,
                               check_url, guarded_client, literal_ip, parse_ipv4_loose)


class Server(BaseHTTPRequestHandler):
    """/ok answers "ok <Host header>"; /redirect?to=URL answers 302 to URL."""

    requests = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests += 1
        url = urlparse(self.path)
        if url.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", parse_qs(url.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f"ok {self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


class NoNetwork(httpcore.AsyncNetworkBackend):
    """A backend that must not be used: the guard has to refuse before connecting."""

    async def connect_tcp(self, host, port, **kwargs):
        raise AssertionError(f"the guard tried to connect to {host}:{port}")

    async def sleep(self, seconds):
        await asyncio.sleep(seconds)


class Recording(httpcore.AsyncNetworkBackend):
    """httpcore's backend, recording the hosts it is asked to connect to."""

    def __init__(self):
        self.inner, self.hosts = httpcore.AnyIOBackend(), []

    async def connect_tcp(self, host, port, **kwargs):
        self.hosts.append(host)
        return await self.inner.connect_tcp(host, port, **kwargs)

    async def sleep(self, seconds):
        await self.inner.sleep(seconds)


async def no_dns(host, port):
    raise AssertionError(f"the guard tried to resolve {host}")


def fake_dns(table):
    async def resolve(host, port):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]
    return resolve


def get(url, allow=(), *, follow=False, timeout=2.0, **kwargs):
    """The response to GET url through a guarded client."""
    async def main():
        async with guarded_client(allow, follow_redirects=follow, timeout=timeout,
                                  **kwargs) as client:
            return await client.get(url)
    return asyncio.run(main())


def refused(url, allow=(), **kwargs) -> Forbidden:
    """The Forbidden that GET url raises; the server must not have seen a request."""
    before = Server.requests
    with pytest.raises(Forbidden) as info:
        get(url, allow, **kwargs)
    assert Server.requests == before
    return info.value


# ---------------------------------------------------------------------- loopback


def test_loopback_refused_by_default(port):
    e = refused(f"http://127.0.0.1:{port}/ok", backend=NoNetwork())
    assert isinstance(e, httpx.ConnectError) and isinstance(e, httpx.TransportError)
    assert (e.reason, e.kind, e.address) == ("forbidden_address", "loopback", "127.0.0.1")
    assert e.request.url.path == "/ok"  # httpx attached the request.
    assert "127.0.0.1" in str(e) and "allow-list" in str(e)


@pytest.mark.parametrize("item", ["127.0.0.0/8", "127.0.0.1", "127.0.0.1/32",
                                  "::1, 127.0.0.0/16"])
def test_loopback_allowed_when_listed(port, item):
    response = get(f"http://127.0.0.1:{port}/ok", [item])
    assert response.status_code == 200 and response.text == f"ok 127.0.0.1:{port}"


def test_host_name_allowed_when_listed(port):
    response = get(f"http://LocalHost:{port}/ok", ["localhost"])
    assert response.status_code == 200
    # The name, not what it resolves to, is allowed.
    refused(f"http://127.0.0.1:{port}/ok", ["localhost"])


def test_name_resolving_to_loopback_refused(port):
    # "localhost" has no special case in the guard: it is refused because of the
    # address the system resolver gives for it.
    e = refused(f"http://localhost:{port}/ok", ["10.0.0.0/8", "camera.local"])
    assert e.kind == "loopback" and e.host == "localhost"
    assert literal_ip(e.address).is_loopback
    # The same name passes when the addresses it resolves to are listed.
    assert get(f"http://localhost:{port}/ok", ["127.0.0.0/8", "::1"]).status_code == 200


# ---------------------------------------------------------------------- spellings

ODD_LOOPBACK = ["2130706433", "0x7f.1", "017700000001", "127.1", "0x7f000001",
                "0177.0.1", "127.0.0.1."]


@pytest.mark.parametrize("host", ODD_LOOPBACK)
def test_odd_ipv4_spellings_refused(port, host):
    e = refused(f"http://{host}:{port}/ok", backend=NoNetwork(), resolver=no_dns)
    assert (e.kind, e.address) == ("loopback", "127.0.0.1")
    with pytest.raises(ValueError, match="loopback"):
        check_url(f"http://{host}:{port}/ok")


def test_odd_spelling_connects_to_the_address_it_checked(port):
    # Allowed by the network: the guard connects to the normalised address, while the
    # Host header stays as the URL wrote it.
    backend = Recording()
    response = get(f"http://2130706433:{port}/ok", ["127.0.0.0/8"], backend=backend)
    assert response.text == f"ok 2130706433:{port}"
    assert backend.hosts == ["127.0.0.1"]


@pytest.mark.parametrize("text", ["2130706433", "0x7f.1", "017700000001", "127.1", "0",
                                  "0x7f000001", "1.2.3.4", "0377.0xff.255.0", "1.65535",
                                  "1.2.65535", "0x", "08", "1.2.3.256", "1.2.65536",
                                  "4294967296", "1.2.3.4.5", "1..2", "", "-1", "+1"])
def test_loose_ipv4_matches_inet_aton(text):
    try:
        expected = socket.inet_ntoa(socket.inet_aton(text))
    except OSError:
        expected = None
    got = parse_ipv4_loose(text)
    assert (None if got is None else str(got)) == expected


@pytest.mark.parametrize("host, kind", [
    ("[::ffff:127.0.0.1]", "loopback"), ("[::ffff:7f00:1]", "loopback"),
    ("[0:0:0:0:0:ffff:127.0.0.1]", "loopback"), ("[::1]", "loopback"),
    ("[::]", "unspecified"), ("0.0.0.0", "unspecified"), ("0", "unspecified"),
    ("[64:ff9b::7f00:1]", "loopback"), ("[2002:7f00:1::]", "loopback"),
    ("[::ffff:169.254.169.254]", "metadata"), ("[::ffff:10.0.0.1]", "private"),
    ("[fe80::1%25eth0]", "link_local"), ("[fd00::1]", "private"),
    ("10.1.2.3", "private"), ("172.31.255.1", "private"), ("192.168.1.1", "private"),
    ("100.64.0.1", "shared"), ("224.0.0.251", "multicast"), ("[ff02::1]", "multicast"),
    ("255.255.255.255", "broadcast"), ("240.0.0.1", "reserved"),
])
def test_internal_addresses_refused_before_connecting(port, host, kind):
    e = refused(f"http://{host}:{port}/ok", backend=NoNetwork(), resolver=no_dns)
    assert e.kind == kind
    with pytest.raises(ValueError, match=kind):
        check_url(f"http://{host}:{port}/ok")


# ---------------------------------------------------------------------- metadata


@pytest.mark.parametrize("url, kind", [
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://169.254.170.2/v2/credentials", "link_local"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://METADATA.Google.Internal./computeMetadata/v1/", "metadata"),
    ("https://metadata.goog/", "metadata"),
    ("http://100.100.100.200/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
])
def test_metadata_refused_fast_without_network(url, kind):
    started = time.monotonic()
    e = refused(url, backend=NoNetwork(), resolver=no_dns)
    assert e.kind == kind
    assert time.monotonic() - started < 1.0
    with pytest.raises(ValueError, match=kind):
        check_url(url)


# ---------------------------------------------------------------------- names and DNS


def test_name_is_resolved_once_and_the_checked_address_connected(port):
    backend = Recording()
    resolver = fake_dns({"camera.test": ["127.0.0.1"]})
    response = get(f"http://camera.test:{port}/ok", ["127.0.0.1"], backend=backend,
                   resolver=resolver)
    assert response.text == f"ok camera.test:{port}"  # Host header: the original name.
    assert backend.hosts == ["127.0.0.1"]  # Connected to the address checked.


def test_any_forbidden_answer_condemns_the_name(port):
    resolver = fake_dns({"rebind.test": ["93.184.215.14", "127.0.0.1"]})
    e = refused(f"http://rebind.test:{port}/ok", backend=NoNetwork(), resolver=resolver)
    assert (e.kind, e.host, e.address) == ("loopback", "rebind.test", "127.0.0.1")


def test_dns_rebinding_cannot_swap_the_address(port):
    """The first answer is public, the next loopback: each connection uses the answer
    it checked, so the second is refused (no gap between check and use)."""
    answers = [["93.184.215.14"], ["127.0.0.1"]]

    async def resolver(host, port):
        return answers.pop(0)

    class Unreachable(Recording):
        async def connect_tcp(self, host, port, **kwargs):
            self.hosts.append(host)
            raise httpcore.ConnectError("no internet in tests")

    backend = Unreachable()

    async def main():
        async with guarded_client([], backend=backend, resolver=resolver) as client:
            with pytest.raises(httpx.ConnectError) as first:
                await client.get(f"http://rebind.test:{port}/ok")
            assert not isinstance(first.value, Forbidden)
            with pytest.raises(Forbidden):
                await client.get(f"http://rebind.test:{port}/ok")

    asyncio.run(main())
    assert backend.hosts == ["93.184.215.14"]


def test_unresolvable_name_is_a_plain_connect_error():
    with pytest.raises(httpx.ConnectError) as info:
        get("http://nowhere.test/", resolver=fake_dns({}), backend=NoNetwork())
    assert not isinstance(info.value, Forbidden)


def test_slow_resolution_times_out():
    async def slow(host, port):
        await asyncio.sleep(10)

    started = time.monotonic()
    with pytest.raises(httpx.ConnectTimeout):
        get("http://slow.test/", resolver=slow, backend=NoNetwork(), timeout=0.2)
    assert time.monotonic() - started < 2.0


# ---------------------------------------------------------------------- redirects


def test_redirect_to_forbidden_host_refused_when_following(port):
    # Both hops reach the same server on 127.0.0.1, under two names: "localhost" is
    # allowed by name, the literal 127.0.0.1 is not listed.
    url = f"http://localhost:{port}/redirect?to=http://127.0.0.1:{port}/ok"
    before = Server.requests
    with pytest.raises(Forbidden) as info:
        get(url, ["localhost"], follow=True)
    assert (info.value.host, info.value.kind) == ("127.0.0.1", "loopback")
    assert Server.requests == before + 1  # The first hop only.
    # The same redirect succeeds once the target is listed too (so the refusal above
    # is the guard's doing), and the run-time's clients do not follow it at all.
    response = get(url, ["localhost", "127.0.0.1"], follow=True)
    assert response.status_code == 200 and len(response.history) == 1
    assert get(url, ["localhost"], follow=False).status_code == 302


def test_redirect_between_names_checks_each_hop(port):
    # Two names for the server's address; only the first is allow-listed, and the
    # redirect's target is checked by what it resolves to.
    dns = fake_dns({"camera.test": ["127.0.0.1"], "evil.test": ["127.0.0.1"]})
    url = f"http://camera.test:{port}/redirect?to=http://evil.test:{port}/ok"
    with pytest.raises(Forbidden) as info:
        get(url, ["camera.test"], follow=True, resolver=dns)
    assert (info.value.host, info.value.address) == ("evil.test", "127.0.0.1")
    response = get(url, ["camera.test", "evil.test"], follow=True, resolver=dns)
    assert response.text == f"ok evil.test:{port}"


@pytest.mark.parametrize("target", ["http://127.0.0.2:{port}/ok", "http://[::1]:{port}/ok",
                                    "http://169.254.169.254/latest/meta-data/",
                                    "http://2130706433:{port}/ok",
                                    "http://metadata.google.internal/"])
def test_redirect_to_other_internal_addresses_refused(port, target):
    with pytest.raises(Forbidden):
        get(f"http://localhost:{port}/redirect?to={target.format(port=port)}",
            ["localhost"], follow=True)


# ---------------------------------------------------------------------- check_url


@pytest.mark.parametrize("url", ["ftp://camera.example/x.jpg", "file:///etc/passwd",
                                 "gopher://camera.example:70/", "ws://camera.example/",
                                 "rtsp://camera.example/stream", "camera.example/x.jpg",
                                 "data:image/jpeg;base64,AAAA", "http:///x.jpg"])
def test_check_url_refuses_non_http(url):
    with pytest.raises(ValueError, match="scheme|no host"):
        check_url(url)


def test_check_url():
    for url in ["https://camera.example/x.jpg", "http://93.184.215.14/cam.jpg",
                "http://[2606:2800:220:1::1]:8080/", "HTTPS://Cams.Example.ORG/a?b=1"]:
        check_url(url)
    allow = AllowList.parse(["10.1.2.0/24", "camera.local", "127.0.0.1"])
    check_url("http://10.1.2.3/snapshot.jpg", allow)
    check_url("http://Camera.Local:8080/snapshot.jpg", allow)
    check_url("http://localhost:8080/snapshot.jpg", allow)
    check_url("http://other.local/", allow)  # Names are checked when connecting.
    with pytest.raises(ValueError, match="private"):
        check_url("http://10.1.3.3/snapshot.jpg", allow)
    with pytest.raises(ValueError, match="loopback"):
        check_url("http://app.localhost/")
    with pytest.raises(ValueError) as info:
        check_url("http://admin:s3cret@192.168.0.10/snapshot.jpg")
    assert "s3cret" not in str(info.value) and "admin" not in str(info.value)


# ---------------------------------------------------------------------- allow-list


def test_allow_list_parse():
    allow = AllowList.parse(" 10.1.2.0/24, Camera.Local.\n[::1] 0x7f.1 fd00::/8")
    assert [str(n) for n in allow.networks] == ["10.1.2.0/24", "::1/128", "127.0.0.1/32",
                                                 "fd00::/8"]
    assert allow.hosts == {"camera.local"}
    assert allow.allows_host("CAMERA.local") and not allow.allows_host("camera.local2")
    assert not AllowList() and not AllowList.parse([]) and not AllowList.parse(None)
    assert check_address("10.1.2.200", allow) is None
    assert check_address("10.1.3.1", allow) == "private"
    assert check_address("::ffff:127.0.0.1", allow) is None  # The embedded v4 is listed.
    assert check_address("fd12::1", allow) is None


@pytest.mark.parametrize("item, message", [
    ("10.1.2.3/24", "host bits"), ("1.2.3.4/33", "1.2.3.4/33"), ("/24", "CIDR"),
    ("10.0.0.0/abc", "CIDR"), ("http://camera.local", "URL"),
    ("camera.local:8080", "host name"), ("camera.local/x", "CIDR"),
    ("not a host!", "host name"), ("-bad.example", "host name"), ("a..b", "host name"),
    (42, "strings"),
])
def test_allow_list_errors(item, message):
    with pytest.raises(ValueError, match=message):
        AllowList.parse([item])


# ---------------------------------------------------------------------- check_address


@pytest.mark.parametrize("ip", ["93.184.215.14", "8.8.8.8", "1.1.1.1",
                                "2606:2800:220:1::1", "::ffff:93.184.215.14",
                                "64:ff9b::5db8:d70e"])
def test_public_addresses_pass(ip):
    assert check_address(ip) is None
    check_url(f"http://{'[' + ip + ']' if ':' in ip else ip}/")


def test_check_address_kinds():
    assert check_address("127.0.0.1") == "loopback"
    assert check_address("169.254.169.254") == "metadata"
    assert check_address("169.254.1.1") == "link_local"
    assert check_address("fe80::1") == "link_local"
    assert check_address("::7f00:1") == "reserved"  # IPv4-compatible (deprecated).
    assert check_address("2001:db8::1") == "reserved"
    assert check_address("100::1") == "reserved"
    with pytest.raises(ValueError):
        check_address("camera.local")


# ---------------------------------------------------------------------- the client


def test_guarded_client_passes_settings_through():
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=2)
    client = guarded_client(["10.0.0.0/8"], limits=limits, timeout=3.5,
                            follow_redirects=True, headers={"User-Agent": "tlc"})
    assert client.follow_redirects is True and client.timeout == httpx.Timeout(3.5)
    assert client.headers["User-Agent"] == "tlc"
    pool = client._transport._pool
    assert isinstance(pool._network_backend, GuardedBackend)
    assert pool._max_connections == 3 and pool._max_keepalive_connections == 2
    assert client._transport.guard.allow == AllowList.parse(["10.0.0.0/8"])
    asyncio.run(client.aclose())
    for kwargs in [dict(proxy="http://proxy.test:3128"), dict(transport=None), dict(mounts={})]:
        with pytest.raises(TypeError, match="bypass"):
            guarded_client(**kwargs)


def test_environment_proxy_is_not_used(port, monkeypatch):
    # A proxy would be the only address the guard sees: the client must ignore it.
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.invalid:3128")
    response = get(f"http://127.0.0.1:{port}/ok", ["127.0.0.1"])
    assert response.status_code == 200
