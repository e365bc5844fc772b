"""argparse types shared by the commands: a bad value is refused before anything runs.

argparse turns the `argparse.ArgumentTypeError` of a type into ``argument --timeout:
...``, exit status 2, so every message names the option. Without these, a ``file://``
URL was read (and its content printed in the error), an ``ftp://`` one was tried, and
``graceshut run --url`` accepted either and failed only when SIGTERM came.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import socket
import urllib.parse

SCHEMES = ("http", "https")


def check_url(url: str) -> str:
    """*url* if it is an ``http://`` or ``https://`` URL with a host and a valid port.

    Raises:
        ValueError: Anything else; the message quotes the URL and says what it needs.
    """
    example = "e.g. http://127.0.0.1:8000/shutdown"
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"{url!r} holds a space or a control character ({example})")
    try:
        split = urllib.parse.urlsplit(url)
    except ValueError:  # an unclosed "[" of an IPv6 address
        raise ValueError(f"{url!r} is not a valid URL ({example})") from None
    if split.scheme.lower() not in SCHEMES:
        raise ValueError(f"{url!r} is not an http:// or https:// URL ({example})")
    try:
        port = split.port
    except ValueError:
        raise ValueError(f"{url!r} has no valid port number (1-65535)") from None
    if port == 0:
        raise ValueError(f"{url!r} has no valid port number (1-65535)")
    if not split.hostname:
        raise ValueError(f"{url!r} names no host ({example})")
    return url


def url(text: str) -> str:
    """The argparse type of a shutdown route's URL: see `check_url`."""
    try:
        return check_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_seconds(text: str) -> float:
    """A finite number of seconds greater than 0 (a socket's timeout)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds greater than 0")
    return value


def pod_ip(text: str) -> str:
    """An IPv4 address of this machine, where the app can listen as on a pod's IP."""
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IPv4 address (e.g. 127.0.0.1, or this machine's address)"
        ) from None
    if (
        address.is_unspecified
        or address.is_multicast
        or address == ipaddress.IPv4Address("255.255.255.255")
    ):
        raise argparse.ArgumentTypeError(f"{text!r} is not an address a pod can have")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            # Only an address of one of this machine's interfaces can be bound.
            probe.bind((str(address), 0))
        except OSError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an address of this machine: the app could not listen on it"
            ) from None
    return str(address)
