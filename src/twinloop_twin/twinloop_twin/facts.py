"""Rollout facts for scorers that read the twin (twin_critic), from twin RolloutResults: the one
encoding the in-process ports and sim_twin (RolloutResult.facts_json) share."""

import numpy as np


def rollout_facts(result):
    """A JSON-able dict of one rollout: collisions, object motion, margins, the grip path."""
    final = {oid: [float(v) for v in pose[0]] for oid, pose in result.final_poses.items()}
    path = np.asarray(result.ee_path)
    return {
        'collisions': [f'{a}|{b}' for a, b in result.collisions],
        'final_positions': final,
        'initial_positions': {
            oid: [float(v) for v in np.subtract(final[oid], d)] for oid, d in result.displacements.items()
        },
        'displacements': {oid: float(np.linalg.norm(d)) for oid, d in result.displacements.items()},
        'rotations': {oid: float(r) for oid, r in result.rotations.items()},
        'joint_margins': [float(m) for m in result.joint_margin],
        'holding': result.holding,
        'ee_start': [float(v) for v in path[0]],
        'ee_end': [float(v) for v in path[-1]],
        'ee_path_length': float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum()) if len(path) > 1 else 0.0,
    }
