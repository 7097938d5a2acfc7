"""DDS traffic cannot leave loopback: checked from the kernel's tables while nodes run."""

import os

import rclpy
from rclpy.executors import SingleThreadedExecutor
from twinloop_interfaces.srv import ScoreTrajectories

from twinloop_bringup import netcheck
from twinloop_bringup.client import call_service

NODES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'nodes')

DDS_MULTICAST_GROUP = '239.255.0.1'  # Fast DDS's default discovery group


def test_environment_enforces_dds_rule():
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert os.path.isfile(os.environ['FASTDDS_DEFAULT_PROFILES_FILE'])
    assert 1 <= int(os.environ['ROS_DOMAIN_ID']) <= 100


def test_no_dds_multicast_or_socket_off_loopback(spawn, ros_context):
    groups_before = netcheck.non_loopback_groups()
    peer = spawn(os.path.join(NODES_DIR, 'interface_peer.py'))
    node = rclpy.create_node('loopback_check', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        client = node.create_client(ScoreTrajectories, 'score_trajectories')
        # traffic flows: the check below runs on live participants that discovered each other over loopback
        call_service(executor, client, ScoreTrajectories.Request(instruction='ping'), 30, 'the interface peer')

        groups_now = netcheck.non_loopback_groups()
        for device, groups in groups_now.items():
            assert DDS_MULTICAST_GROUP not in groups, f'DDS multicast joined on {device}'
            assert groups <= groups_before.get(device, set()), (
                f'new multicast groups on {device}: {groups - groups_before.get(device, set())}'
            )

        sockets = netcheck.udp_sockets([os.getpid(), peer.pid])
        assert {s.pid for s in sockets} == {os.getpid(), peer.pid}, 'expected DDS sockets in both processes'
        domain = int(os.environ['ROS_DOMAIN_ID'])
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            ephemeral_low = int(f.read().split()[0])
        assert 7400 + 250 * domain + 250 <= ephemeral_low, 'the session domain must lie below the ephemeral ports'
        receivers = [s for s in sockets if netcheck.is_rtps_port(s.port, domain)]
        assert receivers, "no socket on the domain's RTPS ports: the check would be vacuous"
        off_loopback = [s for s in receivers if s.address != '127.0.0.1']
        assert not off_loopback, f'DDS receive sockets bound off loopback: {off_loopback}'
        # rmw_fastrtps_cpp's LOCALHOST mode appends a UDP transport of its own (no interface
        # allowlist), which opens send-only sockets on ephemeral ports, one bound per interface.
        # They receive nothing DDS and address only the locators peers announce: loopback, above.
        senders = sorted({s.address for s in sockets} - {'127.0.0.1'})
        print(f'{len(receivers)} DDS receive sockets on 127.0.0.1; send-only sockets also bound to {senders}')
    finally:
        executor.shutdown()
        node.destroy_node()


def test_igmp_parser_reads_groups(tmp_path):
    table = tmp_path / 'igmp'
    table.write_text(
        'Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n'
        '1\tlo        :     2      V3\n\t\t\t\t010000E0     1 0:00000000\t\t0\n'
        '\t\t\t\t0100FFEF     1 0:00000000\t\t0\n'
        '2\teth0      :     1      V3\n\t\t\t\t010000E0     1 0:00000000\t\t0\n'
    )
    assert netcheck.multicast_groups(str(table)) == {'lo': {'224.0.0.1', DDS_MULTICAST_GROUP}, 'eth0': {'224.0.0.1'}}
    assert netcheck.non_loopback_groups(str(table)) == {'eth0': {'224.0.0.1'}}
