"""ros2 launch twinloop_bringup sim_demo_vla.launch.py [scene:=...]:
the 'sim_demo_vla' graph of config/graphs.yaml."""

import os
import sys

from launch import LaunchDescription

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from twinloop_graph import describe  # noqa: E402


def generate_launch_description():
    return LaunchDescription(describe('sim_demo_vla'))
