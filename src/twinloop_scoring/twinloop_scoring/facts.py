"""Rollout facts for scorers that read the twin (twin_critic), from twin RolloutResults."""
import numpy as np


def rollout_facts(result):
    """A JSON-able dict of one rollout: collisions, object motion, margins, the grip path."""
    final = {oid: [float(v) for v in pose[0]] for oid, pose in result.final_poses.items()}
    path = np.asarray(result.ee_path)
    return {
        'collisions': [f'{a}|{b}' for a, b in result.collisions],
        'final_positions': final,
        'initial_positions': {oid: [float(v) for v in np.subtract(final[oid], d)] for oid, d in result.displacements.items()},
        'displacements': {oid: float(np.linalg.norm(d)) for oid, d in result.displacements.items()},
        'rotations': {oid: float(r) for oid, r in result.rotations.items()},
        'joint_margins': [float(m) for m in result.joint_margin],
        'holding': result.holding,
        'ee_start': [float(v) for v in path[0]],
        'ee_end': [float(v) for v in path[-1]],
        'ee_path_length': float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum()) if len(path) > 1 else 0.0,
    }


def facts_from_rollout_msg(msg, initial_positions):
    """The same facts from a twinloop_interfaces/RolloutResult and the objects' synced positions."""
    final = {oid: [pose.position.x, pose.position.y, pose.position.z] for oid, pose in zip(msg.object_ids, msg.final_poses)}
    path = np.array([[p.x, p.y, p.z] for p in msg.ee_path])
    return {
        'collisions': list(msg.collisions),
        'final_positions': final,
        'initial_positions': {oid: [float(v) for v in initial_positions[oid]] for oid in final},
        'displacements': dict(zip(msg.object_ids, (float(d) for d in msg.displacements))),
        'rotations': dict(zip(msg.object_ids, (float(r) for r in msg.rotations))),
        'joint_margins': [float(m) for m in msg.joint_margins],
        'holding': msg.holding,
        'ee_start': [float(v) for v in path[0]],
        'ee_end': [float(v) for v in path[-1]],
        'ee_path_length': float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum()) if len(path) > 1 else 0.0,
    }
