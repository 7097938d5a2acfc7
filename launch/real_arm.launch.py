"""ros2 launch twinloop_bringup real_arm.launch.py [scene:=...]:
the 'real_arm' graph of config/graphs.yaml (robot driver and MoveIt started by you)."""

import os
import sys

from launch import LaunchDescription

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from twinloop_graph import describe  # noqa: E402


def generate_launch_description():
    return LaunchDescription(describe('real_arm'))
