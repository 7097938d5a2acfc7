"""Camera extrinsics from a calibration YAML: the optical frame of each camera in a parent frame.

cameras:
  front:
    parent_frame: world
    position: [1.25, 0.0, 0.65]           # [m]
    quaternion_xyzw: [x, y, z, w]          # optical frame (z forward, x right, y down)
"""

from dataclasses import dataclass

import numpy as np
import yaml


@dataclass(frozen=True)
class Extrinsics:
    """A camera optical frame's pose in parent_frame: position [m] and unit quaternion (x, y, z, w)."""

    parent_frame: str
    position: tuple
    quaternion_xyzw: tuple


def load(path):
    """{camera name: Extrinsics}; a clear ValueError for malformed entries."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    result = {}
    for name, entry in (data.get('cameras') or {}).items():
        try:
            position = tuple(float(v) for v in entry['position'])
            quat = np.array([float(v) for v in entry['quaternion_xyzw']])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f'{path}: camera {name!r} needs position [x, y, z] and quaternion_xyzw [x, y, z, w] ({exc})'
            ) from exc
        if len(position) != 3 or len(quat) != 4 or not np.isclose(np.linalg.norm(quat), 1.0, atol=1e-3):
            raise ValueError(f'{path}: camera {name!r}: position needs 3 values and quaternion_xyzw a unit quaternion')
        result[name] = Extrinsics(entry.get('parent_frame', 'world'), position, tuple(quat / np.linalg.norm(quat)))
    return result
