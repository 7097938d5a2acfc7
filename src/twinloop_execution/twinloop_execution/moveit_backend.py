"""MoveIt 2 execution through moveit_py, where it is installed (a ROS 2 workstation).

Same contract as the embedded backend: plan to a pose or joint goal for the planning group,
then execute; the safety gate checks the planned trajectory first. Configuration:
config/moveit_py.yaml (planning pipelines, request parameters)."""

from dataclasses import dataclass


def available():
    try:
        import moveit.planning  # noqa: F401
    except ImportError:
        return False
    return True


def why_unavailable():
    return 'moveit_py is not importable (install ros-$ROS_DISTRO-moveit-py on a ROS 2 workstation)'


@dataclass
class MoveItExecutor:
    group: str = 'panda_arm'
    node_name: str = 'twinloop_moveit_py'

    def __post_init__(self):
        from moveit.planning import MoveItPy

        self.robot = MoveItPy(node_name=self.node_name)
        self.component = self.robot.get_planning_component(self.group)

    def plan_to_pose(self, pose_stamped, link='panda_hand'):
        """A planned trajectory (moveit RobotTrajectory) or None when planning fails."""
        self.component.set_start_state_to_current_state()
        self.component.set_goal_state(pose_stamped_msg=pose_stamped, pose_link=link)
        result = self.component.plan()
        return result.trajectory if result else None

    @staticmethod
    def joint_trajectory(robot_trajectory):
        """(joint names, times [s], positions) of a MoveIt trajectory, for the safety gate."""
        msg = robot_trajectory.get_robot_trajectory_msg().joint_trajectory
        times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
        return list(msg.joint_names), times, [list(p.positions) for p in msg.points]

    def execute(self, robot_trajectory):
        return self.robot.execute(robot_trajectory, controllers=[])
