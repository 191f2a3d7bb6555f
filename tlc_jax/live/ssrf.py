"""A server-side request forgery guard for the live run-time.

Device URLs come from a database that API users can write, so the run-time must not
become a way to reach the operator's own network: loopback, private, link-local (the
cloud metadata address 169.254.169.254 among them), carrier-grade NAT, multicast,
reserved and unspecified addresses are refused, in every spelling (IPv4-mapped, 6to4
and NAT64 IPv6 forms, `http://2130706433/`, `http://0x7f.1/`, ...), and so are the
cloud metadata host names, unless the operator's `AllowList` names them.

The check is made where the connection is opened: `GuardedBackend` is an httpcore
network backend whose `connect_tcp` resolves the host itself, refuses the connection if
any of the resolved addresses is forbidden, and then connects to one of the very
addresses it checked, so a DNS answer that changes between a check and the connection
(DNS rebinding) cannot slip through. Every connection, including each hop of a
followed redirect, goes through it. The request URL is unchanged, so the Host header
and the TLS server name (SNI, certificate check) stay the original name.

    allow = AllowList.parse(["10.1.2.0/24", "camera.local"])
    client = guarded_client(allow, limits=httpx.Limits(...), follow_redirects=False)
    ...  # a refused connection raises `Forbidden` (an httpx.ConnectError).

`check_url` is a quick synchronous pre-check (scheme, literal addresses, metadata and
localhost names; no DNS) for rejecting a device when it is created; the connection-time
check is the one that counts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import time
from typing import Any, Awaitable, Callable, Iterable, Sequence, Union

import anyio
import httpcore
import httpx

__all__ = ["AllowList", "Forbidden", "GuardedBackend", "GuardedTransport", "check_address",
           "check_url", "guarded_client"]

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

ALLOWED_SCHEMES = ("http", "https")

# Names of cloud instance-metadata services (they resolve to forbidden addresses too,
# but are refused by name before any DNS query is sent).
METADATA_HOSTS = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata", "instance-data",
    "instance-data.ec2.internal",
})

_N4, _N6 = ipaddress.IPv4Network, ipaddress.IPv6Network
# (network, kind): the first match gives the kind. Order matters (specific first).
_FORBIDDEN_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple((_N4(n), k) for n, k in [
    ("169.254.169.254/32", "metadata"),  # AWS, GCP, Azure, OpenStack, Oracle, ...
    ("100.100.100.200/32", "metadata"),  # Alibaba Cloud.
    ("0.0.0.0/8", "unspecified"),  # "This network"; 0.0.0.0 reaches the local host.
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared"),  # Carrier-grade NAT.
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link_local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments.
    ("192.0.2.0/24", "reserved"),  # Documentation.
    ("192.88.99.0/24", "reserved"),  # 6to4 relay anycast.
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),  # Benchmarking.
    ("198.51.100.0/24", "reserved"),  # Documentation.
    ("203.0.113.0/24", "reserved"),  # Documentation.
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
])
_FORBIDDEN_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple((_N6(n), k) for n, k in [
    ("fd00:ec2::254/128", "metadata"),  # AWS over IPv6.
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "private"),  # Local-use NAT64.
    ("100::/64", "reserved"),  # Discard-only.
    ("2001::/23", "reserved"),  # IETF protocol assignments (Teredo, ORCHID, ...).
    ("2001:db8::/32", "reserved"),  # Documentation.
    ("3fff::/20", "reserved"),  # Documentation.
    ("fc00::/7", "private"),  # Unique local.
    ("fe80::/10", "link_local"),
    ("fec0::/10", "private"),  # Site-local (deprecated).
    ("ff00::/8", "multicast"),
])
_GLOBAL_UNICAST_V6 = _N6("2000::/3")  # Everything else in IPv6 is not allocated: reserved.
_NAT64 = _N6("64:ff9b::/96")

_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


class Forbidden(httpx.ConnectError):
    """A connection the guard refused. An `httpx.ConnectError` (hence a TransportError),
    so code that does not know the guard treats it as an unreachable host.

    `reason` is always "forbidden_address" (a counter name); `kind` says why
    ("loopback", "private", "link_local", "metadata", "shared", "unspecified",
    "multicast", "broadcast", "reserved", "unix_socket"); `host` is the host as the URL
    gave it and `address` the offending IP (None when refused by name)."""

    reason = "forbidden_address"

    def __init__(self, host: str, kind: str, address: str | None = None, *,
                 request: httpx.Request | None = None):
        self.host, self.kind, self.address = host, kind, address
        where = host if address is None or address == host else f"{host} ({address})"
        super().__init__(f"Refused to connect to {where} ({kind}): not in the live "
                         "allow-list.", request=request)


# ---------------------------------------------------------------------- addresses


def _normalize_host(host: str) -> str:
    """Lower case, without IPv6 brackets or a final dot."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") and host != "." else host


def parse_ipv4_loose(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address `text` denotes with inet_aton semantics (what the C library
    accepts in a URL host: "2130706433", "0x7f.1", "017700000001", "127.1"), or None."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.fullmatch(p) for p in parts):
        return None
    values = []
    for p in parts:
        if p[:2].lower() == "0x":
            values.append(int(p[2:], 16))
        elif len(p) > 1 and p[0] == "0":
            values.append(int(p, 8))
        else:
            values.append(int(p))
    *head, last = values
    if any(v > 255 for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def literal_ip(host: str) -> IPAddress | None:
    """The address a URL host denotes if it is an IP literal in any spelling the OS
    accepts (dotted, IPv6 in brackets or not, with a zone, inet_aton forms), else None."""
    host = _normalize_host(host)
    if ":" in host:
        try:  # A zone comes percent-encoded from URLs ("fe80::1%25eth0").
            return ipaddress.IPv6Address(host.replace("%25", "%", 1))
        except ValueError:
            return None
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        return parse_ipv4_loose(host)


def _as_ip(ip: str | IPAddress) -> IPAddress:
    if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ip
    parsed = literal_ip(str(ip))
    if parsed is None:
        raise ValueError(f"Not an IP address: {ip!r}.")
    return parsed


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, NAT64 or 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _forms(ip: IPAddress) -> list[IPAddress]:
    """The address, then the IPv4 address it embeds, if any."""
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ipaddress.IPv6Address(int(ip))  # Without a zone.
        v4 = _embedded_v4(ip)
        return [ip] if v4 is None else [ip, v4]
    return [ip]


def _forbidden_kind(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        v4 = _embedded_v4(ip)
        if v4 is not None:
            return _forbidden_kind(v4)
        for net, kind in _FORBIDDEN_V6:
            if ip in net:
                return kind
        return None if ip in _GLOBAL_UNICAST_V6 else "reserved"
    for net, kind in _FORBIDDEN_V4:
        if ip in net:
            return kind
    return None


# ---------------------------------------------------------------------- allow-list


@dataclasses.dataclass(frozen=True)
class AllowList:
    """What the operator lets devices reach although the guard would refuse it: networks
    (CIDR or single addresses) and host names (exact, case-insensitive; a named host is
    allowed whatever it resolves to). Empty by default: nothing internal is reachable."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, items: Iterable[str] | str | None) -> AllowList:
        """From strings such as "10.1.2.0/24", "127.0.0.1", "::1", "camera.local"; a
        string may list several, separated by commas or white space (so a single
        configuration string works too). ValueError names the first malformed item."""
        if items is None:
            return cls()
        if isinstance(items, str):
            items = [items]
        split: list[str] = []
        for raw in items:
            if not isinstance(raw, str):
                raise ValueError(f"Allow-list items must be strings; got {raw!r}.")
            split.extend(part for part in re.split(r"[\s,]+", raw) if part)
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for item in split:
            if "://" in item:
                raise ValueError(f"Allow-list item {item!r} is a URL; give the host alone "
                                 "(e.g. 'camera.local' or '10.1.2.3').")
            if "/" in item:
                addr, _, prefix = item.partition("/")
                ip = literal_ip(addr) if addr else None
                if ip is None or not prefix.isdigit():
                    raise ValueError(f"Allow-list item {item!r} is not a network in CIDR "
                                     "notation (e.g. '10.1.2.0/24' or 'fd00::/8').")
                try:
                    networks.append(ipaddress.ip_network(f"{ip}/{prefix}"))
                except ValueError as e:
                    raise ValueError(f"Allow-list item {item!r}: {e} (give the network "
                                     "address, e.g. '10.1.2.0/24').") from None
                continue
            ip = literal_ip(item)
            if ip is not None:
                ip = _forms(ip)[0]  # A zone has no place in the list.
                networks.append(ipaddress.ip_network(ip))
                continue
            name = _normalize_host(item)
            if (len(name) > 253 or not name
                    or not all(_LABEL.fullmatch(label) for label in name.split("."))):
                raise ValueError(
                    f"Allow-list item {item!r} is neither an IP address, a CIDR network nor "
                    "a host name (give a bare name such as 'camera.local': no scheme, port "
                    "or path).")
            hosts.add(name)
        return cls(tuple(dict.fromkeys(networks)), frozenset(hosts))

    def __bool__(self) -> bool:
        return bool(self.networks or self.hosts)

    def allows_host(self, host: str) -> bool:
        return _normalize_host(host) in self.hosts

    def allows_address(self, ip: str | IPAddress) -> bool:
        """True if the address, or the IPv4 address it embeds, is in a listed network."""
        return any(form in net for form in _forms(_as_ip(ip)) for net in self.networks
                   if form.version == net.version)


EMPTY = AllowList()


def check_address(ip: str | IPAddress, allow: AllowList | None = None) -> str | None:
    """None if devices may connect to `ip`, else why not ("loopback", "private",
    "link_local", "metadata", "shared", "unspecified", "multicast", "broadcast" or
    "reserved"). `ip` may be any spelling `literal_ip` accepts; ValueError otherwise."""
    ip = _as_ip(ip)
    if allow is not None and allow.allows_address(ip):
        return None
    return _forbidden_kind(ip)


def _name_kind(host: str) -> str | None:
    """Why a host name is refused without resolving it (metadata services), or None."""
    return "metadata" if host in METADATA_HOSTS else None


def check_url(url: str, allow: AllowList | None = None) -> None:
    """ValueError if `url` is plainly not fetchable by a device: not http(s), no host,
    a forbidden literal address in any spelling, a cloud metadata name, or a localhost
    name (unless the allow-list names it or allows 127.0.0.1). Sends no DNS query:
    other names are checked when the connection is made. The message never contains
    the URL's credentials."""
    allow = allow or EMPTY
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as e:
        raise ValueError(f"Invalid device URL: {e}") from None
    scheme = parsed.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise ValueError(f"Device URL scheme {scheme or '(none)'!r} is not allowed; use "
                         f"{' or '.join(ALLOWED_SCHEMES)}.")
    host = _normalize_host(parsed.host)
    if not host:
        raise ValueError("Device URL has no host.")
    if allow.allows_host(host):
        return
    ip = literal_ip(host)
    if ip is not None:
        kind = check_address(ip, allow)
    elif host == "localhost" or host.endswith(".localhost") or host == "localhost.localdomain":
        kind = check_address("127.0.0.1", allow)
    else:
        kind = _name_kind(host)
    if kind is not None:
        shown = host if ip is None or str(ip) == host else f"{host} (= {ip})"
        raise ValueError(f"Device URL host {shown} is refused ({kind}); devices may "
                         "reach it only if the live allow-list names it.")


# ---------------------------------------------------------------------- httpcore / httpx


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the OS resolver gives for host:port, in its order (no duplicates)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that only opens connections the guard allows.

    `connect_tcp` resolves the host itself (or takes it as a literal address), refuses
    with `Forbidden` if any address is forbidden and not allow-listed, then connects to
    the checked addresses in turn through `backend` (httpcore's AnyIO backend by
    default). A host name the allow-list names is resolved the same way but its
    addresses are not checked. `resolver` replaces the
    OS resolver (tests): an async (host, port) -> list of IP strings."""

    def __init__(self, allow: AllowList | None = None, *,
                 backend: httpcore.AsyncNetworkBackend | None = None,
                 resolver: Resolver | None = None):
        self.allow = allow or EMPTY
        self._backend = backend if backend is not None else httpcore.AnyIOBackend()
        self._resolve = resolver or system_resolve

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        options = dict(local_address=local_address, socket_options=socket_options)
        name = _normalize_host(host)
        deadline = None if timeout is None else time.monotonic() + timeout
        ip = literal_ip(name)
        if ip is not None:
            kind = check_address(ip, self.allow)
            if kind is not None:
                raise Forbidden(host, kind, str(ip))
            return await self._backend.connect_tcp(str(ip), port, timeout=timeout, **options)
        named = self.allow.allows_host(name)  # Allowed whatever it resolves to.
        kind = None if named else _name_kind(name)
        if kind is not None:
            raise Forbidden(host, kind)

        try:
            with anyio.fail_after(timeout):
                addresses = list(await self._resolve(host, port))
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"Resolving {host!r} timed out.") from None
        except OSError as e:
            raise httpcore.ConnectError(f"Could not resolve {host!r}: {e}") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host!r} resolved to no address.")
        checked = []
        for address in addresses:
            try:
                ip = _as_ip(address)
            except ValueError:
                raise httpcore.ConnectError(f"{host!r} resolved to {address!r}, not an IP "
                                            "address.") from None
            kind = None if named else check_address(ip, self.allow)
            if kind is not None:  # One bad answer condemns the name.
                raise Forbidden(host, kind, str(ip))
            checked.append(str(ip))

        error: Exception | None = None
        for i, address in enumerate(checked):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise httpcore.ConnectTimeout(f"Connecting to {host!r} timed out.")
            # Each remaining address gets an equal share of the time left (the last, all).
            share = None if left is None else left / (len(checked) - i)
            try:
                return await self._backend.connect_tcp(address, port, timeout=share, **options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise Forbidden(path, "unix_socket")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose every connection goes through a
    `GuardedBackend`. No proxy support (a proxy would be the only address checked)."""

    def __init__(self, allow: AllowList | None = None, *,
                 verify: Any = True, cert: Any = None, trust_env: bool = True,
                 http1: bool = True, http2: bool = False,
                 limits: httpx.Limits = httpx.Limits(max_connections=100,
                                                      max_keepalive_connections=20),
                 local_address: str | None = None, retries: int = 0,
                 socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                 resolver: Resolver | None = None,
                 backend: httpcore.AsyncNetworkBackend | None = None):
        ssl_context = httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        super().__init__(verify=ssl_context, trust_env=trust_env, http1=http1, http2=http2,
                         limits=limits, local_address=local_address, retries=retries,
                         socket_options=socket_options)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("This httpx version does not keep its connection pool in "
                               "AsyncHTTPTransport._pool; the SSRF guard cannot be installed.")
        self.guard = GuardedBackend(allow, backend=backend, resolver=resolver)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=http1, http2=http2, local_address=local_address, retries=retries,
            socket_options=socket_options, network_backend=self.guard)


_TRANSPORT_ARGS = ("verify", "cert", "trust_env", "http1", "http2", "limits",
                   "local_address", "retries", "socket_options")
_REFUSED_ARGS = ("transport", "mounts", "proxy", "proxies", "app", "uds")


def guarded_client(allow: AllowList | Iterable[str] | None = None, *,
                   resolver: Resolver | None = None,
                   backend: httpcore.AsyncNetworkBackend | None = None,
                   **client_kwargs: Any) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` whose every connection (each redirect hop included) goes
    through the guard. Takes AsyncClient's keyword arguments (limits, timeout,
    follow_redirects, headers, verify, http2, ...) plus the transport's local_address,
    retries and socket_options; refuses transport, mounts, proxy and uds, which would
    bypass the guard. Environment proxies are not used. `resolver` and `backend` are
    passed to `GuardedBackend` (tests)."""
    refused = sorted(set(client_kwargs) & set(_REFUSED_ARGS))
    if refused:
        raise TypeError(f"guarded_client does not accept {', '.join(refused)}: it would "
                        "bypass the SSRF guard.")
    if not isinstance(allow, AllowList):
        allow = AllowList.parse(allow)
    transport_kwargs = {k: client_kwargs.pop(k) for k in _TRANSPORT_ARGS if k in client_kwargs}
    if "trust_env" in transport_kwargs:
        client_kwargs["trust_env"] = transport_kwargs["trust_env"]
    transport = GuardedTransport(allow, resolver=resolver, backend=backend,
                                 **transport_kwargs)
    return httpx.AsyncClient(transport=transport, **client_kwargs)
