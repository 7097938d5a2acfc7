"""Physical parameters from interaction data: an object's mass and friction estimated by
matching simulated to observed motion (the Real2Sim step of the AntiGrounding pipeline, which
uses grasp-and-place interaction data).

A record holds what the arm did (a twin Candidate) and what was observed at sample times: the
object's position and the arm's joint efforts. Pushing informs friction (the effort to slide
the object, and how far it slides), lifting informs mass (the extra effort to hold it up). The
fit replays every record in the twin for candidate (mass, friction) values and minimises the
normalised mismatch with scipy's Nelder-Mead, in log-mass and friction.
"""

from dataclasses import dataclass

import mujoco
import numpy as np
from scipy.optimize import minimize

from twinloop_twin import world
from twinloop_twin.twin import Candidate


class UnstableSimulation(RuntimeError):
    """The replay diverged (MuJoCo reset the state): these parameters cannot explain the data."""


@dataclass
class InteractionRecord:
    """One interaction: the candidate the arm played and what was observed at the sample times."""

    candidate: Candidate
    sample_times: np.ndarray  # [s] from the start of the candidate
    object_positions: np.ndarray  # (T, 3) [m]
    arm_efforts: np.ndarray  # (T, 7) actuator forces [N m]


@dataclass
class FitResult:
    """Fitted object parameters, the final mismatch cost and the number of replays it took."""

    mass: float  # [kg]
    friction: float  # sliding friction coefficient
    cost: float
    evaluations: int


def simulate(sim, object_id, candidate, sample_times, mass=None, friction=None):
    """Play a candidate from the world's reset state with the given object parameters; sample the object and efforts."""
    body = sim.model.body(object_id).id
    geoms = np.where(sim.model.geom_bodyid == body)[0]
    if mass is not None:
        scale = mass / sim.model.body_mass[body]
        sim.model.body_mass[body] *= scale
        sim.model.body_inertia[body] *= scale
    if friction is not None:
        sim.model.geom_friction[geoms, 0] = friction
    mujoco.mj_setConst(sim.model, sim.data)  # derived constants (invweight0, ...) follow the new mass
    sim.reset(settle_steps=100)
    data, controller = sim.data, world.ArmController(sim.arm_limits)
    controller.follow(data, candidate.times, candidate.positions)
    events = sorted(candidate.gripper)
    start, positions, efforts = data.time, [], []
    for t in sample_times:
        while data.time - start < t:
            while events and data.time - start >= events[0][0]:
                world.set_gripper(data, events.pop(0)[1])
            controller.apply(data)
            mujoco.mj_step(sim.model, data)
            if data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number > 0:
                raise UnstableSimulation(f'the simulation diverged at mass {mass}, friction {friction}')
        positions.append(data.body(object_id).xpos.copy())
        efforts.append(data.actuator_force[:7].copy())
    return np.array(positions), np.array(efforts)


def record(sim, object_id, candidate, sample_times):
    """An InteractionRecord from a simulated world (in deployment: logged from the real arm)."""
    positions, efforts = simulate(sim, object_id, candidate, sample_times)
    return InteractionRecord(candidate, np.asarray(sample_times), positions, efforts)


def fit_physical_parameters(
    sim, object_id, records, initial=(0.1, 0.8), position_scale=0.01, effort_scale=0.5, max_evaluations=120
):
    """Mass and friction of object_id that make the twin reproduce the records."""
    evaluations = 0

    def cost(x):
        nonlocal evaluations
        evaluations += 1
        mass, friction = float(np.exp(x[0])), float(x[1])
        if not 0.05 <= friction <= 2.0 or not 0.02 <= mass <= 5.0:
            return 1e6
        total = 0.0
        for r in records:
            try:
                positions, efforts = simulate(sim, object_id, r.candidate, r.sample_times, mass, friction)
            except UnstableSimulation:
                return 1e6
            total += np.mean(np.sum((positions - r.object_positions) ** 2, axis=1)) / position_scale**2
            total += np.mean(np.sum((efforts - r.arm_efforts) ** 2, axis=1)) / effort_scale**2
        return total / len(records)

    x0 = np.array([np.log(initial[0]), initial[1]])
    result = minimize(
        cost,
        x0,
        method='Nelder-Mead',
        options={
            'maxfev': max_evaluations,
            'xatol': 1e-3,
            'fatol': 1e-4,
            'initial_simplex': [x0, x0 + (0.7, 0), x0 + (0, 0.4)],
        },
    )
    return FitResult(float(np.exp(result.x[0])), float(result.x[1]), float(result.fun), evaluations)
