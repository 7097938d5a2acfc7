"""A stable-baselines3 VecEnv whose environments are Ray actors: PPO's rollout workers on a Ray cluster.

RayVecEnv is SubprocVecEnv (stable-baselines3 2.x) with one Ray actor per environment in place of
one subprocess: the actor builds its env with the same factory, `step_async` sends each actor its
action and `step_wait` gathers the results. The actors do what SubprocVecEnv's workers do, line for
line: a finished episode is reset at once, its last observation kept in the info as
`terminal_observation`, `TimeLimit.truncated` set, and each env's latest reset info returned as
`reset_infos`; `reset()` passes the seeds of `seed()` (and the options of `set_options()`) once. So
the same factory and seeds give the same rollouts as DummyVecEnv and SubprocVecEnv. Commands and
results travel pickled, as through SubprocVecEnv's pipes, so their arrays arrive writable (Ray's
zero-copy numpy arrays are read-only).

Ray must be connected first (twinloop_core.evaluation.ray_cluster); the actors live until `close()`
or the end of the connection. Each asks for `num_cpus` (default: an equal share of the cluster's
CPUs, at most 1), so as many envs as wanted fit a small cluster: 2 on the 2-CPU local one take 1 CPU
each.
"""

import pickle
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper, VecEnv, VecEnvIndices
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs


class EnvWorker:
    """One environment in a Ray actor: SubprocVecEnv's worker commands (stable-baselines3 2.x) as
    methods, called through `call` with their arguments and results pickled."""

    def __init__(self, env_fn_wrapper):
        """Build the env from a CloudpickleWrapper of its factory."""
        from stable_baselines3.common.vec_env.patch_gym import _patch_env

        self.env = _patch_env(env_fn_wrapper.var())
        self.reset_info = {}

    def call(self, method, arguments):
        """The pickled result of a method of this worker on pickled arguments (the actor's entry point)."""
        return pickle.dumps(getattr(self, method)(*pickle.loads(arguments)))

    def step(self, action):
        """Step; a finished episode is reset at once, its last observation kept in the info."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info['TimeLimit.truncated'] = truncated and not terminated
        if done:
            info['terminal_observation'] = observation
            observation, self.reset_info = self.env.reset()
        return observation, reward, done, info, self.reset_info

    def reset(self, seed, options):
        """Reset with this seed (None: go on with the env's generator) and options ({}: none)."""
        maybe_options = {'options': options} if options else {}
        observation, self.reset_info = self.env.reset(seed=seed, **maybe_options)
        return observation, self.reset_info

    def render(self):
        """The env's render()."""
        return self.env.render()

    def get_spaces(self):
        """(observation space, action space)."""
        return self.env.observation_space, self.env.action_space

    def env_method(self, name, args, kwargs):
        """Call a method of the env (or of a wrapper)."""
        return self.env.get_wrapper_attr(name)(*args, **kwargs)

    def get_attr(self, name):
        """An attribute of the env (or of a wrapper); AttributeError when there is none."""
        return self.env.get_wrapper_attr(name)

    def has_attr(self, name):
        """Whether the env (or a wrapper) has the attribute."""
        try:
            self.env.get_wrapper_attr(name)
            return True
        except AttributeError:
            return False

    def set_attr(self, name, value):
        """Set an attribute of the outermost env, as SubprocVecEnv does."""
        setattr(self.env, name, value)

    def is_wrapped(self, wrapper_class):
        """Whether the env is wrapped in wrapper_class."""
        from stable_baselines3.common.env_util import is_wrapped

        return is_wrapped(self.env, wrapper_class)

    def close(self):
        """Close the env."""
        self.env.close()


def cpu_share(ray, num_envs):
    """An equal share of the cluster's CPUs per env, at most 1, in Ray's resource steps of 1e-4."""
    cpus = float(ray.cluster_resources().get('CPU', 1.0))
    return max(1e-4, min(1.0, int(1e4 * cpus / num_envs) / 1e4))


class RayVecEnv(VecEnv):
    """SubprocVecEnv with one Ray actor per environment on the connected Ray cluster."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]], num_cpus: float | None = None):
        """One actor per factory, each asking for num_cpus (default: cpu_share); Ray must be initialised."""
        import ray

        if not ray.is_initialized():
            raise RuntimeError('RayVecEnv needs a connected Ray (twinloop_core.evaluation.ray_cluster)')
        self.ray = ray
        self.waiting = False
        self.closed = False
        self.num_cpus = cpu_share(ray, len(env_fns)) if num_cpus is None else num_cpus
        worker = ray.remote(EnvWorker).options(num_cpus=self.num_cpus)
        self.actors = [worker.remote(CloudpickleWrapper(env_fn)) for env_fn in env_fns]
        self.pending = []
        observation_space, action_space = self._call(self.actors[:1], 'get_spaces')[0]
        super().__init__(len(env_fns), observation_space, action_space)

    @staticmethod
    def _send(actor, method, *args):
        """A future of an EnvWorker method called on the actor."""
        return actor.call.remote(method, pickle.dumps(args))

    def _call(self, actors, method, *args):
        """The results of one method called on these actors (all sent before any is awaited)."""
        return self._gather([self._send(actor, method, *args) for actor in actors])

    def _gather(self, futures):
        """Wait for futures of EnvWorker methods and unpickle their results."""
        return [pickle.loads(result) for result in self.ray.get(futures)]

    def step_async(self, actions: np.ndarray) -> None:
        """Send each actor its action."""
        self.pending = [self._send(actor, 'step', action) for actor, action in zip(self.actors, actions, strict=True)]
        self.waiting = True

    def step_wait(self):
        """Gather the steps: stacked observations, rewards and dones, and the infos."""
        results = self._gather(self.pending)
        self.pending, self.waiting = [], False
        obs, rews, dones, infos, self.reset_infos = zip(*results, strict=True)
        return _stack_obs(obs, self.observation_space), np.stack(rews), np.stack(dones), infos

    def reset(self):
        """Reset every env with its seed and options from seed() / set_options(), used once."""
        futures = [self._send(actor, 'reset', self._seeds[i], self._options[i]) for i, actor in enumerate(self.actors)]
        obs, self.reset_infos = zip(*self._gather(futures), strict=True)
        self._reset_seeds()
        self._reset_options()
        return _stack_obs(obs, self.observation_space)

    def close(self) -> None:
        """Close the envs and end their actors."""
        if self.closed:
            return
        if self.waiting:
            self._gather(self.pending)
        self._call(self.actors, 'close')
        for actor in self.actors:
            self.ray.kill(actor)
        self.closed = True

    def get_images(self) -> Sequence[np.ndarray | None]:
        """The envs' rgb_array renders."""
        if self.render_mode != 'rgb_array':
            warnings.warn(
                f'The render mode is {self.render_mode}, but this method assumes it is `rgb_array` to obtain images.'
            )
            return [None for _ in self.actors]
        return self._call(self.actors, 'render')

    def has_attr(self, attr_name: str) -> bool:
        """Whether every env has the attribute."""
        return all(self._call(self.actors, 'has_attr', attr_name))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute of each env of indices."""
        return self._call(self._targets(indices), 'get_attr', attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set the attribute of each env of indices."""
        self._call(self._targets(indices), 'set_attr', attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call a method of each env of indices; their results."""
        return self._call(self._targets(indices), 'env_method', method_name, method_args, method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Whether each env of indices is wrapped in wrapper_class."""
        return self._call(self._targets(indices), 'is_wrapped', wrapper_class)

    def _targets(self, indices):
        """The actors of indices (None: all)."""
        return [self.actors[i] for i in self._get_indices(indices)]
