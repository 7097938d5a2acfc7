"""What every evaluation shares: the Wilson interval of a success rate, and a Ray cluster to run
episodes on (a local one listens on loopback only)."""

import contextlib
import math
import os

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
