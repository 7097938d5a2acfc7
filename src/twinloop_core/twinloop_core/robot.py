"""The arm's joint names (Franka Panda, as in its URDF and /joint_states)."""

ARM_JOINTS = tuple(f'panda_joint{i}' for i in range(1, 8))
FINGER_JOINTS = ('panda_finger_joint1', 'panda_finger_joint2')
