"""MoveIt 2 execution through moveit_py, where it is installed (a ROS 2 workstation).

MoveIt plans to a pose for the planning group; the safety gate checks the exact planned
trajectory and the execution node runs it like its own (cancel, watchdogs). Configuration:
config/moveit_py.yaml (planning pipelines, request parameters)."""

from dataclasses import dataclass


def available():
    """Whether moveit_py can be imported here."""
    try:
        import moveit.planning  # noqa: F401
    except ImportError:
        return False
    return True


def why_unavailable():
    """What to install for the MoveIt backend."""
    return 'moveit_py is not importable (install ros-$ROS_DISTRO-moveit-py on a ROS 2 workstation)'


@dataclass
class MoveItPlanner:
    """Plans with moveit_py; the execution node gates the plan and executes it with its own
    monitoring (cancel, tracking and joint-state watchdogs), so MoveIt never moves the arm itself."""

    group: str = 'panda_arm'
    node_name: str = 'twinloop_moveit_py'

    def __post_init__(self):
        from moveit.planning import MoveItPy

        self.robot = MoveItPy(node_name=self.node_name)
        self.component = self.robot.get_planning_component(self.group)

    def plan_to_pose(self, pose_stamped, link='panda_hand'):
        """(joint names, times [s], positions) of a plan to the pose; PlanningError when planning fails."""
        from twinloop_execution.planning import PlanningError

        self.component.set_start_state_to_current_state()
        self.component.set_goal_state(pose_stamped_msg=pose_stamped, pose_link=link)
        result = self.component.plan()
        if not result:
            raise PlanningError('MoveIt found no plan to the target pose')
        msg = result.trajectory.get_robot_trajectory_msg().joint_trajectory
        times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
        return list(msg.joint_names), times, [list(p.positions) for p in msg.points]
