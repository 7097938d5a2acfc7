"""Shared evaluation pieces: the Wilson interval at published values, and a local Ray cluster
that listens on loopback only."""

import pytest

from twinloop_core.evaluation import LOOPBACK, ray_cluster, wilson_interval


def test_wilson_interval_matches_published_values():
    """18/24: 55.1-88.0 %; 64/128: 41.5-58.5 %; the ends stay inside 0..1; no episodes: 0..1."""
    assert wilson_interval(18, 24) == pytest.approx((0.551, 0.880), abs=5e-4)
    assert wilson_interval(64, 128) == pytest.approx((0.4146, 0.5854), abs=1e-4)
    assert wilson_interval(0, 4) == pytest.approx((0.0, 0.4899), abs=1e-4)
    assert wilson_interval(5, 5) == pytest.approx((0.566, 1.0), abs=5e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_local_ray_cluster_runs_tasks_on_loopback_and_shuts_down():
    with ray_cluster('local', num_cpus=2) as ray:
        assert ray.is_initialized()
        assert {node['NodeManagerAddress'] for node in ray.nodes()} == {LOOPBACK}
        assert ray.get([ray.remote(lambda x: x * x).remote(i) for i in range(4)]) == [0, 1, 4, 9]
    assert not ray.is_initialized()
