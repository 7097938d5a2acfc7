"""RayVecEnv (ray_vec_env.py): two KeypointEnvs as Ray actors on a local 2-CPU cluster step exactly as
SubprocVecEnv and DummyVecEnv over the same factory and seeds, through episode ends (auto-reset,
terminal observation, reset infos); attributes and methods reach the actors, and close() ends them."""

import time
from copy import deepcopy
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from twinloop_core.evaluation import ray_cluster
from twinloop_iker.config import IkerConfig
from twinloop_iker.evaluate import make_env
from twinloop_iker.ray_vec_env import RayVecEnv

STEPS, MAX_STEPS = 11, 4  # every env ends two episodes (time limit) and is two steps into its third


def assert_same(a, b):
    """Equal nested results: dicts, sequences and arrays element for element, bit for bit."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert a == b


def rollout(venv, actions, seed):
    """Everything the VecEnv gives over these actions from seed(seed): the reset, then each step with its
    reset infos."""
    assert venv.seed(seed) == [seed, seed + 1]
    results = [(venv.reset(), deepcopy(venv.reset_infos))]  # DummyVecEnv changes its reset_infos list in place
    return results + [(venv.step(action), deepcopy(venv.reset_infos)) for action in actions]


def actor_ends(ray, actor, remote, seconds=10.0):
    """Whether the actor stops answering within `seconds` (ray.kill is asynchronous: a call made at once may
    still be served)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            remote._call([actor], 'get_spaces')
        except ray.exceptions.RayActorError:
            return True
        time.sleep(0.1)
    return False


def test_ray_actors_step_as_subprocesses_and_dummy_vec_env():
    config = IkerConfig()
    config = replace(config, env=replace(config.env, max_steps=MAX_STEPS))
    factory = partial(make_env, 'push', config, True)
    local, subprocesses = DummyVecEnv([factory] * 2), SubprocVecEnv([factory] * 2)
    low, high = local.action_space.low, local.action_space.high
    actions = np.random.default_rng(0).uniform(low, high, size=(STEPS, 2, *low.shape)).astype(low.dtype)
    expected, in_process = rollout(subprocesses, actions, 7), rollout(local, actions, 7)
    subprocesses.close()
    with ray_cluster('local') as ray:
        remote = RayVecEnv([factory] * 2)
        assert remote.num_cpus == 1.0 and remote.num_envs == 2
        assert remote.observation_space == local.observation_space and remote.action_space == local.action_space
        got = rollout(remote, actions, 7)
        assert remote._seeds == [None, None]  # used once
        assert_same(got, expected)  # bit for bit, dtypes included
        ends = 0
        for (step, reset_infos), (step_in_process, reset_infos_in_process) in zip(got[1:], in_process[1:]):
            observations, rewards, dones, infos = step
            assert observations.flags.writeable and dones.dtype == bool
            # DummyVecEnv keeps rewards in a float32 buffer, SubprocVecEnv stacks the envs' floats
            assert rewards.dtype == np.float64 and step_in_process[1].dtype == np.float32
            assert_same((observations, rewards.astype(np.float32), dones, infos), step_in_process)
            assert_same(reset_infos, reset_infos_in_process)
            for info in infos:
                if 'terminal_observation' in info:
                    ends += 1
                    assert info['terminal_observation'].flags.writeable and info['TimeLimit.truncated']
        assert ends == 4

        assert remote.get_attr('render_mode') == local.get_attr('render_mode') == [None, None]
        assert remote.env_is_wrapped(Monitor) == local.env_is_wrapped(Monitor) == [False, False]
        assert remote.has_attr('skill') and not remote.has_attr('no_such_attribute')
        with pytest.raises(AttributeError):
            remote.get_attr('no_such_attribute')
        remote.set_attr('marker', 3, indices=[1])
        assert remote.get_attr('marker', indices=1) == [3] and not remote.has_attr('marker')
        assert_same(remote.env_method('reset', seed=11, indices=[0]), local.env_method('reset', seed=11, indices=[0]))

        remote.step_async(actions[0])
        remote.close()  # waits for the pending step, closes the envs, ends the actors
        assert actor_ends(ray, remote.actors[0], remote), 'the actor still answers 10 s after close()'
        remote.close()  # closed once
    local.close()
    assert not ray.is_initialized()
