"""DDS settings every twinloop process runs with, and per-session ROS domain ids.

twinloop's network rule: DDS discovery and data never leave the host. Every process gets
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and the Fast DDS profile config/fastdds_localhost.xml
(shared memory + UDP on 127.0.0.1 only). Test sessions and demo runs each take a domain id of
their own so that concurrent runs on one machine never see each other's nodes.
"""

import fcntl
import os
from pathlib import Path

DISCOVERY_RANGE = 'LOCALHOST'
RMW = 'rmw_fastrtps_cpp'
PROFILE_NAME = 'fastdds_localhost.xml'
# Fast DDS maps domain d to UDP ports 7400 + 250 d .. +249; ids up to 232 are valid on Linux.
# Sessions (tests, demo runs) allocate from 1..100, whose ports all lie below Linux's ephemeral
# range (32768+), so no socket on a random port can ever sit on a session's DDS ports.
# Interactive shells default to 215..231 (see twinloop_env.sh).
SESSION_DOMAIN_RANGE = range(1, 101)
_LOCK_DIR = Path(os.environ.get('TMPDIR', '/tmp')) / 'twinloop-domains'
_held_locks = []  # file objects kept open: the lock lives as long as the process


def config_dir():
    """The workspace's config/ folder: installed share dir, else the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory('twinloop_bringup')) / 'config'
        if (installed / PROFILE_NAME).exists():
            return installed
    except (ImportError, LookupError):
        pass
    root = os.environ.get('TWINLOOP_ROOT')
    if root and (Path(root) / 'config' / PROFILE_NAME).exists():
        return Path(root) / 'config'
    for parent in Path(__file__).resolve().parents:
        if (parent / 'config' / PROFILE_NAME).exists():
            return parent / 'config'
    raise FileNotFoundError(f'cannot find config/{PROFILE_NAME}; set TWINLOOP_ROOT to the workspace')


def allocate_domain_id():
    """Reserve a ROS domain id no other twinloop session on this host holds, for this process's life."""
    _LOCK_DIR.mkdir(parents=True, exist_ok=True)
    start = os.getpid() % len(SESSION_DOMAIN_RANGE)
    for offset in range(len(SESSION_DOMAIN_RANGE)):
        domain = SESSION_DOMAIN_RANGE[(start + offset) % len(SESSION_DOMAIN_RANGE)]
        lock = open(_LOCK_DIR / f'{domain}.lock', 'w')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _held_locks.append(lock)
        return domain
    raise RuntimeError(f'all ROS domain ids {SESSION_DOMAIN_RANGE.start}..{SESSION_DOMAIN_RANGE.stop - 1} are taken')


def dds_environment(domain_id=None):
    """The variables that keep DDS on loopback; domain_id None keeps the current one."""
    env = {
        'ROS_AUTOMATIC_DISCOVERY_RANGE': DISCOVERY_RANGE,
        'RMW_IMPLEMENTATION': RMW,
        'FASTDDS_DEFAULT_PROFILES_FILE': str(config_dir() / PROFILE_NAME),
    }
    if domain_id is not None:
        env['ROS_DOMAIN_ID'] = str(domain_id)
    return env


def apply_session_environment():
    """Set the DDS rule and a fresh domain id in os.environ (call before rclpy.init); returns the id."""
    domain = allocate_domain_id()
    os.environ.update(dds_environment(domain))
    return domain
