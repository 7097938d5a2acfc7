"""world_sim alone: the simulated Panda, gripper and cameras (ros2 launch on a workstation)."""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare('twinloop_bringup'), 'config'])
    return LaunchDescription([
        DeclareLaunchArgument('scene', default_value=PathJoinSubstitution([config, 'scenes', 'tabletop.yaml']),
                              description='scene YAML: objects and cameras'),
        DeclareLaunchArgument('real_time_factor', default_value='1.0', description='simulated seconds per wall second'),
        Node(package='twinloop_twin', executable='world_sim', name='world_sim', output='screen',
             parameters=[PathJoinSubstitution([config, 'world_sim.yaml']),
                         {'scene': LaunchConfiguration('scene'),
                          'real_time_factor': LaunchConfiguration('real_time_factor')}]),
    ])
