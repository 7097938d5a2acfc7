"""What every evaluation shares: the Wilson interval of a success rate, the development and
held-out seed ranges of a task file, episode logs (JSON lines), a Ray cluster to run episodes
on (a local one listens on loopback only), and the commit and machine a result came from."""

import contextlib
import json
import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import yaml

LOOPBACK = '127.0.0.1'
# Ray resolves a loopback node address to the machine's outward one unless this is off (as on macOS)
RAY_CLUSTER_SWITCH = 'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'


def wilson_interval(successes, n, z=1.96):
    """The Wilson score interval (low, high) of successes / n (95 % for z = 1.96); (0, 1) without episodes."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_ranges(path):
    """{'development': (first, last), 'held_out': (first, last)} of a tasks file, checked disjoint."""
    with open(path) as f:
        ranges = {k: tuple(v) for k, v in yaml.safe_load(f)['seeds'].items()}
    (d0, d1), (h0, h1) = ranges['development'], ranges['held_out']
    if not (d0 < d1 and h0 < h1 and (d1 <= h0 or h1 <= d0)):
        raise ValueError(f'{path}: seeds.development {[d0, d1]} and seeds.held_out {[h0, h1]} must be disjoint ranges')
    return ranges


def check_seeds(seeds, ranges, dev):
    """'' or why these seeds may not run: a --dev run only on development seeds (it never sees the
    held-out ones), a benchmark only on held-out seeds."""
    name = 'development' if dev else 'held_out'
    first, last = ranges[name]
    outside = [s for s in seeds if not first <= s < last]
    if not outside:
        return ''
    if dev:
        return (
            f'--dev runs use development seeds [{first}, {last}) only; {outside} are not (held-out seeds stay unseen)'
        )
    return f'the benchmark runs held-out seeds [{first}, {last}) only; {outside} are not (development runs: --dev)'


def episode_log(path):
    """The records of an episode log (one JSON object per line; blank lines skipped); [] if absent."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def ray_cluster(address='local', num_cpus=2):
    """The ray module, connected for the block: to the cluster at address, or ('local') to a cluster
    of num_cpus started here, listening on 127.0.0.1 only (checked), without a dashboard; what was
    started here is shut down after. A Ray already initialised in this process is used as it is."""
    if address == 'local':
        os.environ[RAY_CLUSTER_SWITCH] = '0'  # read by ray's import here and in the processes it starts
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        yield ray
        return
    if address == 'local':
        ray_constants.ENABLE_RAY_CLUSTER = False  # when ray was imported before the switch was set
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        if address == 'local':
            outward = {node['NodeManagerAddress'] for node in ray.nodes()} - {LOOPBACK}
            if outward:
                raise RuntimeError(f'the local Ray cluster listens on {sorted(outward)}, not on loopback only')
        yield ray
    finally:
        ray.shutdown()


def git_commit(root, paths=('src', 'config', 'bench/*.py', 'bench/*.yaml')):
    """The checkout's short commit, with '-dirty' when tracked files under `paths` differ from it."""

    def git(*args):
        try:
            return subprocess.run(['git', '-C', str(root), *args], capture_output=True, text=True).stdout.strip()
        except OSError:
            return ''

    commit = git('rev-parse', '--short', 'HEAD') or 'unknown'
    dirty = git('status', '--porcelain', '--untracked-files=no', '--', *paths)
    return commit + ('-dirty' if dirty else '')


def machine(packages=('mujoco', 'open3d', 'torch', 'numpy', 'rclpy', 'mink', 'ruckig', 'transformers')):
    """The CPU, its cores, Python and the versions of the packages a result depends on."""
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = 'n/a'
    cpu = next(
        (line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
        platform.processor(),
    )
    return {'cpu': cpu, 'cores': os.cpu_count(), 'python': platform.python_version(), 'versions': versions}
