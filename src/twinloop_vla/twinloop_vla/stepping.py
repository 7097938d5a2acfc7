"""Action chunks onto a stepped simulation (in-process evaluation): when to infer, which action runs.

The simulation waits while the policy thinks, so the robot's inference delay is modelled in whole
control steps: a chunk inferred from the observation of step t is used from step t + delay (its
first `delay` actions are past, dropped as re-anchoring drops them on the robot) while the running
chunk goes on; the first chunk starts at once (the arm rests while the policy thinks). A chunk
takes over every `execute_steps` steps. The blendings of twinloop_vla.blending, at whole steps:
- receding_horizon: the newest chunk's action;
- temporal_ensembling: the weighted mean of every chunk covering the step, weights exp(-decay i),
  i = 0 the oldest;
- rtc: the newest chunk's action, over its first blend_steps steps ramped linearly from the
  running chunk's; a chunk that starts the motion from rest ramps from holding still there.
Every action dimension (the gripper too) is blended the same way.
"""

from dataclasses import dataclass

import numpy as np

from twinloop_vla.blending import BlendConfig


@dataclass
class _Chunk:
    observed: int  # the step whose observation it came from: actions[k] is for step observed + k
    start: int  # the first step it is used at
    actions: np.ndarray  # (C, A)

    def at(self, step):
        """Its action for step (its last one held past its end)."""
        return self.actions[min(step - self.observed, len(self.actions) - 1)]

    def covers(self, step):
        return self.start <= step < self.observed + len(self.actions)


class SteppedChunks:
    """Which chunk's actions run at each step, and when the next chunk is due."""

    def __init__(self, blend: BlendConfig, delay_steps=0):
        if not 0 <= delay_steps < blend.execute_steps:
            raise ValueError(f'delay_steps must be in [0, execute_steps = {blend.execute_steps}), got {delay_steps}')
        self.blend, self.delay = blend, delay_steps
        self.chunks = []
        self.next_observation = 0

    def due(self, step):
        """True when the chunk to take over next must be inferred from this step's observation."""
        return step >= self.next_observation

    def add(self, step, actions, rest=None):
        """The chunk inferred from step's observation: (C, A) actions for steps step .. step + C - 1.
        rest (A,): the action that holds the arm where it rests, for a chunk that starts the motion."""
        actions = np.asarray(actions, float)
        start = step + self.delay if self.chunks else step
        if actions.ndim != 2 or len(actions) < start - step + self.blend.execute_steps:
            raise ValueError(
                f'a chunk must be (C, A) with C >= delay + execute_steps = {self.delay + self.blend.execute_steps}, '
                f'got shape {actions.shape}'
            )
        running = [c for c in self.chunks if c.covers(step)]
        if not running and rest is not None and self.blend.blending == 'rtc':
            running = [_Chunk(step, step, np.tile(np.asarray(rest, float), (len(actions), 1)))]
        self.chunks = running + [_Chunk(step, start, actions)]
        self.next_observation = start + self.blend.execute_steps - self.delay

    def action(self, step):
        """The action to apply at step (a chunk must cover it)."""
        active = [c for c in self.chunks if c.start <= step]
        if not active:
            raise RuntimeError(f'no chunk covers step {step}')
        newest = active[-1]
        if self.blend.blending == 'temporal_ensembling':
            covering = [c for c in active if c.covers(step)] or [newest]
            weights = np.exp(-self.blend.ensemble_decay * np.arange(len(covering)))
            return weights @ np.array([c.at(step) for c in covering]) / weights.sum()
        into = step - newest.start
        if self.blend.blending == 'rtc' and len(active) > 1 and into < self.blend.blend_steps:
            w = (into + 1) / (self.blend.blend_steps + 1)
            return (1 - w) * active[-2].at(step) + w * newest.at(step)
        return newest.at(step)
