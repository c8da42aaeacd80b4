"""IPv6 packets on one interface for the tools off the hot path (``kbmfast mn``, tests, the serve
benchmark's sender): send through a raw IPv6 socket, receive through a packet socket.

A kernel without Mobile IPv6 (no CONFIG_IPV6_MIP6) neither sends nor delivers Mobility Header
packets itself: it drops packets with a Home Address option or a type 2 routing header (and may
answer with ICMPv6 Parameter Problem). So :class:`Link` sends whole IPv6 packets, headers
included, on a raw ``IPPROTO_RAW`` socket bound to the interface (the kernel still routes them
and resolves the next hop's link-layer address), and receives with an ``AF_PACKET`` socket,
which sees each frame before the IP stack does. Both need CAP_NET_RAW in the interface's
network namespace; the sockets belong to the namespace they were opened in.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import time

from ._types import KbmError

ETH_P_IPV6 = 0x86DD
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_PACKET_OUTGOING = getattr(socket, "PACKET_OUTGOING", 4)


class LinkError(KbmError):
    """An interface could not be opened or used; ``kind`` says why: "no-device",
    "permission" or "os"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Link:
    """One interface: :meth:`send` IPv6 packets out of it, :meth:`receive` those arriving on it.

    >>> link = Link("eth0")  # doctest: +SKIP
    >>> link.send(packet); reply = link.receive(timeout=1.0)  # doctest: +SKIP
    """

    def __init__(self, interface: str) -> None:
        self.interface = interface
        try:
            self.index = socket.if_nametoindex(interface)
        except (OSError, ValueError):
            raise LinkError("no-device", f"interface {interface}: no such interface") from None
        self._rx: socket.socket | None = None
        self._tx: socket.socket | None = None
        try:
            self._rx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6))
            self._rx.bind((interface, ETH_P_IPV6))
            self._rx.setblocking(False)
            self._tx = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self._tx.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, os.fsencode(interface))
        except PermissionError:
            self.close()
            raise LinkError(
                "permission",
                f"interface {interface}: operation not permitted (sending and receiving Mobility Header "
                "packets needs CAP_NET_RAW: run as root or grant the capability)",
            ) from None
        except OSError as e:
            self.close()
            if isinstance(e, OSError) and e.errno == 19:  # ENODEV: gone between the two calls
                raise LinkError("no-device", f"interface {interface}: no such interface") from None
            raise LinkError("os", f"interface {interface}: {e.strerror or e}") from None

    def send(self, packet: bytes) -> None:
        """Send one IPv6 packet (from its IPv6 header) out of the interface, to its destination
        address (the kernel picks the next hop and its link-layer address)."""
        if self._tx is None:
            raise ValueError("this Link is closed")
        if len(packet) < 40 or packet[0] >> 4 != 6:
            raise ValueError("packet: not an IPv6 packet")
        dst = str(ipaddress.IPv6Address(packet[24:40]))
        try:
            self._tx.sendto(packet, (dst, 0, 0, self.index))
        except OSError as e:
            raise LinkError("os", f"interface {self.interface}: sending to {dst}: {e.strerror or e}") from None

    def receive(self, timeout: float) -> bytes | None:
        """The next IPv6 packet that arrives on the interface (not one sent from this host),
        or None after ``timeout`` seconds without one."""
        if self._rx is None:
            raise ValueError("this Link is closed")
        end = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                packet, where = self._rx.recvfrom(65535)
            except BlockingIOError:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                select.select([self._rx], [], [], left)
                continue
            if where[2] != _PACKET_OUTGOING:
                return packet

    def fileno(self) -> int:
        """The receiving socket's descriptor (for select/poll)."""
        if self._rx is None:
            raise ValueError("this Link is closed")
        return self._rx.fileno()

    def close(self) -> None:
        """Close both sockets; idempotent."""
        for s in (self._rx, self._tx):
            if s is not None:
                s.close()
        self._rx = self._tx = None

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<kbmfast Link {self.interface!r}>"
