"""AntiGrounding's annealed, experience-guided candidate generation (no rclpy).

Goal positions are sampled in a sphere around the end effector. The radius anneals as
R_t = R_min + (R_0 - R_min) exp(-lambda_R t), and so does the angular dispersion of the
directions around the preferred one. Directions that scored well are remembered (experience):
with probability `exploit` a direction is drawn around their score-weighted mean, otherwise
uniformly on the sphere. A sub-task transition resets the annealing and the experience.
Each candidate also carries a gripper event (none, open, close).
"""

from dataclasses import dataclass, field

import numpy as np

from twinloop_core.gripper import EVENT_CLOSE, EVENT_NONE, EVENT_OPEN

# a Sample's gripper event, in the order of SamplerConfig.gripper_probabilities (assigned, not
# re-imported, so that removing unused imports keeps them: candidates.py and the tests use them)
GRIPPER_NONE, GRIPPER_OPEN, GRIPPER_CLOSE = EVENT_NONE, EVENT_OPEN, EVENT_CLOSE


@dataclass
class SamplerConfig:
    """Annealing schedule, experience and gripper-event probabilities of the sampler."""

    r0: float = 0.15  # [m] initial radius
    r_min: float = 0.02  # [m]
    lambda_r: float = 0.35  # per MPC step
    angle0: float = np.pi  # [rad] initial angular dispersion around the preferred direction
    angle_min: float = 0.25  # [rad]
    exploit: float = 0.6  # share of candidates drawn around the experience direction
    memory: int = 64  # remembered (direction, score) pairs (0: no experience, the prior alone guides)
    gripper_probabilities: tuple = (0.7, 0.15, 0.15)  # none, open, close


@dataclass
class Sample:
    """One sampled goal: grip-site target, its direction and radius, and the gripper event (GRIPPER_*)."""

    goal: np.ndarray  # goal position of the end effector [m]
    direction: np.ndarray  # unit vector from the end effector
    radius: float
    gripper: int


@dataclass
class AnnealedSampler:
    """Samples goals in an annealed sphere around the end effector, guided by well-scored directions."""

    config: SamplerConfig = field(default_factory=SamplerConfig)
    seed: int = 0

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self.reset()

    def reset(self, r0=None):
        """Start the annealing again (a sub-task transition) and forget the experience; r0: the
        initial radius for what comes next (default: the configured R_0)."""
        self.step = 0
        self.experience = []
        self.r0 = self.config.r0 if r0 is None else r0

    def radius(self, step=None):
        """Sampling radius R_t at MPC step t (default: the current step) [m]."""
        t = self.step if step is None else step
        c = self.config
        return c.r_min + (self.r0 - c.r_min) * np.exp(-c.lambda_r * t)

    def dispersion(self, step=None):
        """Angular dispersion around the preferred direction at MPC step t (default: the current step) [rad]."""
        t = self.step if step is None else step
        c = self.config
        return c.angle_min + (c.angle0 - c.angle_min) * np.exp(-c.lambda_r * t)

    def preferred_direction(self, prior=None, prior_weight=1.0):
        """Score-weighted (softmax) mean of remembered directions, blended with an optional prior
        direction (prior_weight relative to the experience's total weight); None without either."""
        mean = np.zeros(3)
        if self.experience:
            directions = np.array([d for d, _ in self.experience])
            scores = np.array([s for _, s in self.experience])
            weights = np.exp((scores - scores.max()) / 0.1)
            mean = (weights[:, None] * directions).sum(axis=0) / weights.sum()
        if prior is not None:
            mean = mean + prior_weight * np.asarray(prior, float)
        norm = np.linalg.norm(mean)
        return mean / norm if norm > 1e-9 else None

    def _around(self, axis, angle):
        """A unit vector within `angle` of axis (uniform in the spherical cap)."""
        cos_max = np.cos(min(angle, np.pi))
        z = self.rng.uniform(cos_max, 1.0)
        phi = self.rng.uniform(0, 2 * np.pi)
        local = np.array([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z])
        helper = np.array([1.0, 0, 0]) if abs(axis[0]) < 0.9 else np.array([0, 1.0, 0])
        u = np.cross(axis, helper)
        u /= np.linalg.norm(u)
        v = np.cross(axis, u)
        return local[0] * u + local[1] * v + local[2] * axis

    def sample(self, ee_position, count, prior=None, prior_weight=1.0, radius_cap=np.inf):
        """count candidate goals around the end effector at the current annealing step; prior: a
        unit direction (e.g. towards the stage's sub-goal) blended into the experience; radius_cap:
        an upper bound on the radius (e.g. from the distance to that sub-goal)."""
        preferred = self.preferred_direction(prior, prior_weight)
        radius, angle = min(self.radius(), radius_cap), self.dispersion()
        out = []
        for _ in range(count):
            if preferred is not None and self.rng.random() < self.config.exploit:
                direction = self._around(preferred, angle)
            else:
                direction = self._around(np.array([0, 0, 1.0]), np.pi)  # uniform on the sphere
            r = radius * np.cbrt(self.rng.random())  # uniform in the ball's volume
            gripper = int(self.rng.choice(3, p=self.config.gripper_probabilities))
            out.append(Sample(np.asarray(ee_position, float) + r * direction, direction, r, gripper))
        return out

    def feedback(self, samples, scores):
        """Remember how the step's candidates scored, then advance the annealing."""
        for sample, score in zip(samples, scores):
            if np.isfinite(score):
                self.experience.append((sample.direction, float(score)))
        self.experience = self.experience[max(0, len(self.experience) - self.config.memory) :]
        self.step += 1
