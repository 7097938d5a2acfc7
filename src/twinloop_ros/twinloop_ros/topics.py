"""Every topic, service and action name twinloop's nodes share, and the QoS profiles they use:
the one place to look them up (nodes import them; parameters may still remap per graph)."""

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

JOINT_STATES = '/joint_states'
CLOCK = '/clock'
ROBOT_DESCRIPTION = '/robot_description'
DIAGNOSTICS = '/diagnostics'
OBJECTS = '/perception/objects'  # DetectedObjectArray from pose estimation
GROUND_TRUTH_OBJECTS = '/world_sim/ground_truth/objects'  # evaluation only: the simulator's truth
ARM_CONTROLLER = 'panda_arm_controller'  # the joint trajectory controller (nodes' `arm_controller` parameter)


def arm_trajectory(controller=ARM_CONTROLLER):
    """The JointTrajectory topic a ros2_control joint trajectory controller takes."""
    return f'/{controller}/joint_trajectory'


ARM_TRAJECTORY = arm_trajectory()
GRIPPER_COMMAND = '/panda_gripper/width_command'  # std_msgs/Float64 width [m]
PLANNER_CANDIDATES = '/planner/candidates'  # MarkerArray: candidate grip paths coloured by score
PLANNER_CHOSEN = '/planner/chosen'  # Marker: the executed candidate
IKER_KEYPOINTS = '/iker/keypoints'  # MarkerArray: numbered keypoints and the targets IKER's code gives them

SCORE_TRAJECTORIES = '/score_trajectories'
SCORING_NODE = '/trajectory_scoring'  # whose reads_images parameter says whether scoring needs rendered views
EXECUTE_MOTION = 'execute_motion'
EXECUTION_STREAM = '/execution/stream'  # StreamChunk of the execution node (its ~/stream)
RUN_POLICY = 'run_policy'  # RunPolicy of the policy server (vla_policy)
EXECUTE_INSTRUCTION = 'execute_instruction'
WORLD_RESET = '/world_sim/reset'  # ResetWorld of world_sim (its ~/reset)
WORLD_MOVE_OBJECT = '/world_sim/move_object'  # MoveObject of world_sim (its ~/move_object): disturbances
REDETECT = '/pose_estimation/redetect'  # Trigger of pose_estimation (its ~/redetect)


def twin_service(twin_node, name):
    """A twin node's service (sync, rollout, render)."""
    return f'/{twin_node}/{name}'


def camera_topic(camera, kind):
    """Topic names of a camera, RealSense-style: /cameras/<name>/{color,depth}/..., /cameras/<name>/pose."""
    return {
        'color': f'/cameras/{camera}/color/image_raw',
        'color_info': f'/cameras/{camera}/color/camera_info',
        'depth': f'/cameras/{camera}/aligned_depth_to_color/image_raw',
        'depth_info': f'/cameras/{camera}/aligned_depth_to_color/camera_info',
        'pose': f'/cameras/{camera}/pose',
    }[kind]


SENSOR_QOS = qos_profile_sensor_data  # camera images and infos: best effort, keep the newest
STATE_QOS = 10  # joint states, objects, commands: reliable, depth 10
# Latched (the last message goes to late subscribers): camera extrinsics, the robot description.
LATCHED_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
EXTRINSICS_QOS = LATCHED_QOS
