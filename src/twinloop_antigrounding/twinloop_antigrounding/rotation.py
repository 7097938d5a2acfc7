"""AntiGrounding's rigid-coupled rotation module (shared/seeds/000), no rclpy.

VLMs reason poorly about rotation matrices, so the held object's axes are drawn into a rendered
view (x red, y green, z blue) and the VLM is asked which of the object's axes must turn, which
way and by how much. The answer becomes a rotation of the object about its own axis, and - the
object being rigidly held - the same world-frame rotation of the gripper. Without a VLM (no agent,
or twin_critic, which cannot read the axes) the twin answers the same question geometrically
where the task gives an orientation (`geometric`: put side by side with a reference object, as a
pair, it takes its yaw), labelled as such; otherwise the module is skipped, and says so.
"""

import json
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from twinloop_core.geometry import wrap_angle, yaw_of
from twinloop_scoring.vlm import VLMRequest

AXES = {'x': 0, 'y': 1, 'z': 2}
SCHEMA = {
    'type': 'object',
    'required': ['axis', 'direction', 'degrees'],
    'properties': {
        'axis': {'type': 'string', 'enum': ['x', 'y', 'z', 'none']},
        'direction': {'type': 'string', 'enum': ['positive', 'negative']},
        'degrees': {'type': 'number', 'minimum': 0, 'maximum': 180},
    },
}
PROMPT = (
    'Instruction: "{instruction}"\nThe image shows the {label} with its own coordinate axes drawn from its centre: '
    "x red, y green, z blue. The robot holds it rigidly. Which one of the object's axes must it rotate about, "
    'in which direction (right-hand rule: "positive" turns counter-clockwise looking down the axis at the object), '
    'and by how many degrees, so that the instruction can be fulfilled? '
    'Answer "none" as the axis if no rotation is needed. '
    'Reply with JSON: {{"axis": "x|y|z|none", "direction": "positive|negative", "degrees": <0-180>}}'
)


TWIN_GEOMETRY = 'twin geometry (not a VLM)'
ORIENTED_RELATIONS = ('side_by_side',)  # a pair with the reference: the object takes its yaw


class RotationUnavailable(Exception):
    """The module cannot answer (not a VLM, failed or malformed reply); the message says why."""


@dataclass
class RotationAnswer:
    """The VLM's answer: turn the held object about one of its own axes by a signed angle."""

    axis: str  # x, y, z or none
    angle: float  # [rad], signed
    backend: str
    rationale: str = ''

    def object_rotation(self, object_rotation):
        """The object's target orientation: turned about its own axis."""
        if self.axis == 'none':
            return np.asarray(object_rotation)
        axis = np.zeros(3)
        axis[AXES[self.axis]] = 1.0
        return np.asarray(object_rotation) @ Rotation.from_rotvec(self.angle * axis).as_matrix()

    def gripper_rotation(self, object_rotation, gripper_rotation):
        """The gripper's target orientation: the same world-frame rotation as the rigidly held object."""
        delta = self.object_rotation(object_rotation) @ np.asarray(object_rotation).T
        return delta @ np.asarray(gripper_rotation)


def request(instruction, label, image):
    """The VLMRequest asking about the object's drawn axes, with the JSON schema of the answer."""
    return VLMRequest(PROMPT.format(instruction=instruction, label=label), [image], json_schema=SCHEMA)


def parse(reply, backend):
    """A RotationAnswer from a reply's text; RotationUnavailable for anything malformed."""
    try:
        data = json.loads(reply)
        axis, direction, degrees = data['axis'], data['direction'], float(data['degrees'])
    except (ValueError, KeyError, TypeError) as exc:
        raise RotationUnavailable(f'{backend}: malformed rotation reply ({exc})') from None
    if axis not in (*AXES, 'none') or direction not in ('positive', 'negative') or not 0 <= degrees <= 180:
        raise RotationUnavailable(f'{backend}: rotation reply out of range: {reply[:200]}')
    sign = 1.0 if direction == 'positive' else -1.0
    return RotationAnswer(axis, sign * np.radians(degrees), backend)


def ask(backend, instruction, label, image):
    """Ask a VLM backend about the held object's axes in the image; RotationUnavailable if it cannot."""
    if not backend.is_vlm:
        raise RotationUnavailable(f'rotation module skipped: {backend.label} cannot read the axes in an image')
    reply = backend.complete([request(instruction, label, image)])[0]
    if not reply:
        raise RotationUnavailable(f'{backend.label}: {reply.reason}')
    return parse(reply.text, f'{reply.backend}:{reply.model}')


def geometric(object_quat, reference_quat):
    """The twin's answer (not a VLM): the turn about the object's own z axis that gives it the
    reference's yaw (the shorter way round)."""
    turn = wrap_angle(yaw_of(reference_quat) - yaw_of(object_quat))
    return RotationAnswer('z', turn, TWIN_GEOMETRY, "the reference object's yaw, from the twin's poses")
