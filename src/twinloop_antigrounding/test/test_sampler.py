"""The annealed sampler: radius and dispersion follow the schedule, experience biases the
directions, a sub-task transition resets both."""

import numpy as np
import pytest

from twinloop_antigrounding.sampler import AnnealedSampler, SamplerConfig


def test_radius_schedule():
    config = SamplerConfig(r0=0.2, r_min=0.02, lambda_r=0.5)
    sampler = AnnealedSampler(config)
    for t in (0, 1, 3, 10):
        assert sampler.radius(t) == pytest.approx(0.02 + 0.18 * np.exp(-0.5 * t))
    ee = np.array([0.4, 0.0, 0.3])
    for t in range(6):
        samples = sampler.sample(ee, 50)
        distances = [np.linalg.norm(s.goal - ee) for s in samples]
        assert max(distances) <= sampler.radius(t) + 1e-12
        assert np.median(distances) > 0.6 * sampler.radius(t)  # uniform in the ball's volume: most lie far out
        sampler.feedback(samples, np.zeros(len(samples)))
    assert sampler.dispersion(0) > sampler.dispersion(5) > config.angle_min


def test_experience_biases_directions_toward_good_scores():
    sampler = AnnealedSampler(SamplerConfig(exploit=0.8), seed=3)
    ee = np.zeros(3)
    target = np.array([1.0, 0.0, 0.0])
    for _ in range(4):
        samples = sampler.sample(ee, 32)
        sampler.feedback(samples, [float(s.direction @ target) for s in samples])  # +x scores best
    biased = np.mean([s.direction for s in sampler.sample(ee, 400)], axis=0)
    uniform = np.mean([s.direction for s in AnnealedSampler(seed=3).sample(ee, 400)], axis=0)
    assert biased @ target > 0.5, biased
    assert abs(uniform @ target) < 0.15, uniform


def test_subtask_transition_resets_annealing_and_experience():
    sampler = AnnealedSampler()
    for _ in range(5):
        sampler.feedback(sampler.sample(np.zeros(3), 8), np.arange(8.0))
    assert sampler.radius() < sampler.config.r0 and sampler.preferred_direction() is not None
    sampler.reset()
    assert sampler.radius() == pytest.approx(sampler.config.r0) and sampler.preferred_direction() is None


def test_gripper_events_follow_probabilities():
    sampler = AnnealedSampler(SamplerConfig(gripper_probabilities=(0.5, 0.0, 0.5)), seed=1)
    events = [s.gripper for s in sampler.sample(np.zeros(3), 400)]
    assert set(events) == {0, 2} and 150 < events.count(2) < 250


def test_prior_direction_biases_samples_without_experience():
    sampler = AnnealedSampler(SamplerConfig(exploit=1.0, angle0=0.5, angle_min=0.5), seed=1)
    prior = np.array([0.0, -1.0, 0.0])
    directions = np.array([s.direction for s in sampler.sample(np.zeros(3), 200, prior=prior)])
    assert np.all(directions @ prior >= np.cos(0.5) - 1e-9)
    unbiased = np.array([s.direction for s in sampler.sample(np.zeros(3), 200)])
    assert abs(np.mean(unbiased @ prior)) < 0.2


def test_memory_bounds_the_experience_and_zero_keeps_none():
    """memory: 0 is the "w/o experience-guided sampling" ablation: nothing is remembered."""
    ee = np.zeros(3)
    for memory, kept in ((0, 0), (5, 5), (64, 24)):
        sampler = AnnealedSampler(SamplerConfig(memory=memory))
        for _ in range(3):
            sampler.feedback(sampler.sample(ee, 8), np.arange(8.0))
        assert len(sampler.experience) == kept
    assert AnnealedSampler(SamplerConfig(memory=0)).preferred_direction(prior=np.array([0, 0, 1.0])) is not None
