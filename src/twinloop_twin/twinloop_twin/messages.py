"""Twin types <-> twinloop_interfaces messages (detections in, rollout results out)."""

import numpy as np
from geometry_msgs.msg import Point
from twinloop_interfaces.msg import RolloutResult

from twinloop_ros import codec
from twinloop_ros.conversions import pose_msg, pose_position, pose_quat
from twinloop_twin.facts import rollout_facts
from twinloop_twin.twin import Detection


def detections(msg):
    """Twin Detections of a DetectedObjectArray."""
    return [Detection(o.id, o.mesh_id, pose_position(o.pose), pose_quat(o.pose), o.label) for o in msg.objects]


def rollout_msg(candidate_id, result):
    """RolloutResult of a twin rollout, with the scorers' facts (rollout_facts) as facts_json."""
    msg = RolloutResult(candidate_id=candidate_id, holding=result.holding, duration=float(result.duration))
    msg.collisions = [f'{a}|{b}' for a, b in result.collisions]
    msg.object_ids = list(result.final_poses)
    msg.final_poses = [pose_msg(*result.final_poses[oid]) for oid in msg.object_ids]
    msg.displacements = [float(np.linalg.norm(result.displacements[oid])) for oid in msg.object_ids]
    msg.rotations = [float(result.rotations[oid]) for oid in msg.object_ids]
    msg.joint_margins = [float(m) for m in result.joint_margin]
    msg.ee_path = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in result.ee_path]
    msg.facts_json = codec.facts_json(rollout_facts(result))
    return msg
