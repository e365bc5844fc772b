"""The TCP connections this pod holds, read from the kernel's own table.

`/proc/net/tcp` and `/proc/net/tcp6` list every socket of the network namespace,
which in a pod is the pod's own. One read at the trigger tells which connections
were already open then, without a cost per request while serving.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (peer address, peer port, local port) of one established connection.
Peer = tuple[IPAddress, int, int]

_ESTABLISHED = "01"
_STATE = 3  # the fourth field of a line: the connection's state
_IPV4_BYTES = 4
_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def established_peers(tables: tuple[Path, ...] = _TABLES) -> frozenset[Peer]:
    """Every established TCP connection's peer and local port; empty where unreadable."""
    peers: set[Peer] = set()
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) <= _STATE or fields[_STATE] != _ESTABLISHED:
                continue
            try:
                _, local_port = _address(fields[1])
                remote, remote_port = _address(fields[2])
            except ValueError:
                continue
            peers.add((remote, remote_port, local_port))
    return frozenset(peers)


def peer(host: object, port: object, local_port: object) -> Peer | None:
    """The same triple for a client as a server names it, or None if it cannot be read."""
    if not isinstance(port, int) or not isinstance(local_port, int):
        return None
    try:
        address = ipaddress.ip_address(str(host))
    except ValueError:
        return None
    return _plain(address), port, local_port


def _address(text: str) -> tuple[IPAddress, int]:
    """``0100007F:1F90`` -> (127.0.0.1, 8080): the kernel's hex, 32-bit words little-endian."""
    host, _, port = text.partition(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address: IPAddress = (
        ipaddress.IPv4Address(words) if len(words) == _IPV4_BYTES else ipaddress.IPv6Address(words)
    )
    return _plain(address), int(port, 16)


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4 address seen through an IPv6 socket (``::ffff:a.b.c.d``) as plain IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
