"""The AntiGrounding engine's parameters (config/anti_grounding.yaml), validated at start."""

from dataclasses import dataclass, field

from twinloop_antigrounding.sampler import SamplerConfig


@dataclass
class MpcConfig:
    """Every parameter of the MPC loop; the goal's num_candidates overrides num_candidates."""

    num_candidates: int = 16
    max_steps_per_stage: int = 10
    stage_r0: dict = field(default_factory=lambda: {'release': 0.06})  # [m] R_0 per stage (default: sampler.r0)
    goal_prior: float = 1.0  # weight of the sub-goal direction among the experience (0: paper-only)
    goal_candidate: bool = True  # one candidate goes straight to the stage's sub-goal (false: paper-only)
    speed: float = 0.4  # [m/s] end-effector speed of candidate motions in the twin
    min_duration: float = 0.3  # [s] per candidate segment
    grip_pause: float = 0.3  # [s] for the fingers after a gripper event
    settle: float = 0.2  # [s] simulated after a candidate's last point
    lift_after_grasp: float = 0.03  # [m] a close candidate rises this much after closing
    back_off_after_release: float = 0.05  # [m] an open candidate rises this much after opening
    ik_points: int = 3  # Cartesian waypoints per segment (IK each)
    blocked_distance: float = 0.015  # [m] a rollout ending farther from its goal was blocked: not chosen
    gate_retries: int = 3  # next-best candidates tried when the safety gate refuses one before it moves
    fell_below: float = 0.1  # [m] an object needed this far below the lowest object at the start fell off the table
    min_height: float = 0.015  # [m] lowest grip-site goal above the surface the objects stand on
    max_candidates: int = 64  # largest num_candidates a goal may ask for
    rotation_agent: str = ''  # a VLM agent of agents_file answering the rotation module; '': the twin's geometry
    agents_file: str = 'vlm_agents.yaml'  # agent definitions, relative to the engine config folder
    seed: int = 0
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
