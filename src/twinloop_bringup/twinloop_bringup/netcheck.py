"""Deterministic checks that DDS traffic cannot leave loopback, read from /proc.

Instead of counting packets on a busy interface, look at what the kernel was asked to do:
multicast groups joined per interface (/proc/net/igmp) and the local addresses of the UDP
sockets that given processes hold (/proc/net/udp{,6} joined with /proc/<pid>/fd).
"""

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

LOOPBACK_DEVICES = {'lo'}


def multicast_groups(igmp_path='/proc/net/igmp'):
    """{device: set of IPv4 multicast groups joined on it}."""
    groups, device = {}, None
    with open(igmp_path) as f:
        next(f)  # header
        for line in f:
            if line[0].isdigit():
                device = line.split()[1]
                groups.setdefault(device, set())
            elif line.strip() and device is not None:
                raw = int(line.split()[0], 16)
                groups[device].add(socket.inet_ntoa(struct.pack('<I', raw)))
    return groups


def non_loopback_groups(igmp_path='/proc/net/igmp'):
    """{device: groups} for every interface that is not loopback."""
    return {dev: g for dev, g in multicast_groups(igmp_path).items() if dev not in LOOPBACK_DEVICES}


@dataclass(frozen=True)
class UdpSocket:
    """A UDP socket bound by a process: pid, local address and port."""

    pid: int
    address: str
    port: int


def _decode(hex_addr):
    ip_hex, port_hex = hex_addr.split(':')
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = socket.inet_ntoa(raw[::-1])
    else:  # IPv6: four little-endian 32-bit words
        ip = str(ipaddress.IPv6Address(b''.join(raw[i : i + 4][::-1] for i in range(0, 16, 4))))
    return ip, int(port_hex, 16)


def socket_inodes(pid):
    """Inodes of the sockets process `pid` holds."""
    inodes = set()
    fd_dir = f'/proc/{pid}/fd'
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(int(target[8:-1]))
    return inodes


def udp_sockets(pids):
    """Bound UDP sockets (IPv4 and IPv6) held by the given processes."""
    owner = {}
    for pid in pids:
        for inode in socket_inodes(pid):
            owner[inode] = pid
    found = []
    for table in ('/proc/net/udp', '/proc/net/udp6'):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                inode = int(fields[9])
                if inode in owner:
                    ip, port = _decode(fields[1])
                    found.append(UdpSocket(owner[inode], ip, port))
    return found


def is_rtps_port(port, domain_id):
    """True for the UDP ports RTPS assigns to `domain_id` (PB 7400 + DG 250 * domain, 250 wide)."""
    base = 7400 + 250 * domain_id
    return base <= port < base + 250
