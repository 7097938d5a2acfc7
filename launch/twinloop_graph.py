"""Turns a graph of config/graphs.yaml into launch_ros Nodes: the launch files and `twinloop run`
start exactly the same nodes, parameters and remappings, and supervise them the same way: a node
that exits shuts the whole graph down, naming it (tests/test_graphs.py checks both)."""

from launch.actions import DeclareLaunchArgument, Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from twinloop_bringup import graphs


def describe(graph):
    """[scene argument, Node, ...] for a graph, the scene chosen at launch time."""
    default_scene = PathJoinSubstitution([FindPackageShare('twinloop_bringup'), 'config', 'scenes', 'tabletop.yaml'])
    actions = [
        DeclareLaunchArgument('scene', default_value=default_scene, description='scene YAML: objects and cameras')
    ]
    for spec in graphs.load(graph, {'scene': LaunchConfiguration('scene')}):
        actions.append(
            Node(
                package=spec.package,
                executable=spec.executable,
                name=spec.name,
                output='screen',
                parameters=[spec.params_file, spec.parameters],
                remappings=spec.remappings,
                on_exit=Shutdown(reason=f'node {spec.name} exited: the graph stops (fail-stop, as `twinloop run`)'),
            )
        )
    return actions
