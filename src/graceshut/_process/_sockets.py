"""The TCP sockets of this pod, read from the kernel's own table.

`/proc/net/tcp` and `/proc/net/tcp6` list every socket of the network namespace,
which in a pod is the pod's own: the connections open at a moment (one read at the
trigger tells which were already open then, without a cost per request while serving)
and who listens on a port. Off Linux there is no such table: the readers find nothing.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import sys
from collections.abc import Iterator
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (peer address, peer port, local port) of one established connection.
Peer = tuple[IPAddress, int, int]

ESTABLISHED = "01"
LISTEN = "0A"  # the states of include/net/tcp_states.h, as the table prints them
_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_INODE = 9  # the tenth field of a line
_IPV4_BYTES = 4


@dataclasses.dataclass(frozen=True)
class Socket:
    """One line of the table."""

    local: IPAddress
    local_port: int
    remote: IPAddress
    remote_port: int
    state: str
    inode: int


def sockets(tables: tuple[Path, ...] = _TABLES) -> Iterator[Socket]:
    """Every TCP socket of the namespace, IPv4 and IPv6; none where unreadable."""
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) <= _INODE:
                continue
            try:
                local, local_port = _address(fields[1])
                remote, remote_port = _address(fields[2])
                yield Socket(local, local_port, remote, remote_port, fields[3], int(fields[_INODE]))
            except ValueError:
                continue


def established_peers() -> frozenset[Peer]:
    """Every established connection's peer and local port."""
    return frozenset(
        (s.remote, s.remote_port, s.local_port) for s in sockets() if s.state == ESTABLISHED
    )


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
    """``0100007F:1F90`` -> (127.0.0.1, 8080)."""
    host, _, port = text.partition(":")
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word of the address in the host's byte order.
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address: IPAddress = (
        ipaddress.IPv4Address(raw) if len(raw) == _IPV4_BYTES else ipaddress.IPv6Address(raw)
    )
    return _plain(address), int(port, 16)


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4 address seen through an IPv6 socket (``::ffff:a.b.c.d``) as plain IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
