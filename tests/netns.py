"""Two network namespaces joined by a veth pair, for the end-to-end tests of ``kbmfast serve``.

The correspondent node (CN) side runs ``kbmfast serve`` through ``ip netns exec``; the mobile
node (MN) side is this process, through packet sockets opened inside the MN namespace (a thread
enters it with setns(2), opens the socket, and leaves: the socket stays in that namespace).
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import kbmfast

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
CN = "2001:db8:3::300"
COA = "2001:db8:2::200"

#: Keeps the kernel's ICMPv6 errors about Binding Updates (it has no MIPv6) off the wire; the
#: same rule as docs/serve.md.
NFT_RULES = """
table inet kbmfast {
  chain output {
    type filter hook output priority 0; policy accept;
    icmpv6 type parameter-problem icmpv6 code { 1, 2 } drop
  }
}
"""


def run(*cmd: str, ns: str | None = None, check: bool = True, input: str | None = None) -> str:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "PYTHONMALLOC")}
    done = subprocess.run(full, capture_output=True, text=True, input=input, env=env, timeout=30)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(full)}: {done.stderr.strip()}")
    return done.stdout


def in_netns(ns: str, fn: Callable[[], Any]) -> Any:
    """Call fn in a thread that is inside network namespace ns; returns what it returns."""
    libc = ctypes.CDLL(None, use_errno=True)
    box: dict[str, Any] = {}

    def body() -> None:
        own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            try:
                box["value"] = fn()
            finally:
                libc.setns(own, CLONE_NEWNET)
        except BaseException as e:
            box["error"] = e
        finally:
            os.close(own)
            os.close(target)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class Net:
    """cn-* and mn-* namespaces, veth kc* (CN side, CN's address) and km* (MN side, COA)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.cn, self.mn = f"kbm-cn-{tag}", f"kbm-mn-{tag}"
        self.cn_if, self.mn_if = f"kc{tag}", f"km{tag}"
        run("ip", "netns", "add", self.cn)
        run("ip", "netns", "add", self.mn)
        run("ip", "link", "add", self.cn_if, "type", "veth", "peer", "name", self.mn_if)
        run("ip", "link", "set", self.cn_if, "netns", self.cn)
        run("ip", "link", "set", self.mn_if, "netns", self.mn)
        for ns, ifname, addr in ((self.cn, self.cn_if, CN), (self.mn, self.mn_if, COA)):
            run("ip", "link", "set", "lo", "up", ns=ns)
            run("ip", "link", "set", ifname, "up", ns=ns)
            run("ip", "-6", "addr", "add", f"{addr}/48", "dev", ifname, "nodad", ns=ns)
        run("nft", "-f", "-", ns=self.cn, input=NFT_RULES)
        self.cn_mac = self._mac(self.cn, self.cn_if)
        self.mn_mac = self._mac(self.mn, self.mn_if)
        # a second pair, for serve on two interfaces (no addresses: frames only)
        self.cn_if2, self.mn_if2 = f"kd{tag}", f"kn{tag}"
        run("ip", "link", "add", self.cn_if2, "type", "veth", "peer", "name", self.mn_if2)
        run("ip", "link", "set", self.cn_if2, "netns", self.cn)
        run("ip", "link", "set", self.mn_if2, "netns", self.mn)
        run("ip", "link", "set", self.cn_if2, "up", ns=self.cn)
        run("ip", "link", "set", self.mn_if2, "up", ns=self.mn)
        self.cn_mac2 = self._mac(self.cn, self.cn_if2)
        self.mn_mac2 = self._mac(self.mn, self.mn_if2)

    @staticmethod
    def _mac(ns: str, ifname: str) -> bytes:
        info = json.loads(run("ip", "-j", "link", "show", ifname, ns=ns))
        return bytes.fromhex(info[0]["address"].replace(":", ""))

    def close(self) -> None:
        for ns in (self.cn, self.mn):
            run("ip", "netns", "del", ns, check=False)


class MobileNode:
    """Sends IPv6 packets to the CN over the veth pair and collects what comes back: the
    Binding Acknowledgements (parsed) and any ICMPv6 Parameter Problem."""

    def __init__(self, net: Net, second: bool = False) -> None:
        self.net = net
        ifname = net.mn_if2 if second else net.mn_if
        self.header = (net.cn_mac2 + net.mn_mac2 if second else net.cn_mac + net.mn_mac) + b"\x86\xdd"

        def open_socket() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((ifname, 0))
            return s

        self.sock: socket.socket = in_netns(net.mn, open_socket)
        self.sock.settimeout(0.1)
        self.acks: list[tuple[float, bytes]] = []
        self.icmp_errors = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop:
            try:
                frame, where = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if where[2] == socket.PACKET_OUTGOING or frame[12:14] != b"\x86\xdd":
                continue
            packet = frame[14:]
            if len(packet) > 40 and packet[6] == 58 and packet[40] == 4:
                with self._cond:
                    self.icmp_errors += 1
                continue
            try:
                parsed = kbmfast.parse_packet(packet)
            except kbmfast.MalformedPacket:
                continue
            if isinstance(parsed.message, kbmfast.BindingAck):
                with self._cond:
                    self.acks.append((time.monotonic(), packet))
                    self._cond.notify_all()

    def send(self, packet: bytes) -> None:
        self.sock.send(self.header + packet)

    def wait_acks(self, count: int, timeout: float = 10.0) -> list[bytes]:
        """Until at least ``count`` acknowledgements have arrived in all; returns them all."""
        end = time.monotonic() + timeout
        with self._cond:
            while len(self.acks) < count:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.acks)} acknowledgements arrived, {count} expected")
                self._cond.wait(left)
            return [p for _, p in self.acks]

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()
