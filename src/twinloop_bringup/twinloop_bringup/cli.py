"""The `twinloop` command."""

import argparse
import sys


def main(argv=None):
    """Entry point of `twinloop`: parse the subcommand (doctor, demo, run) and return its exit code."""
    parser = argparse.ArgumentParser(prog='twinloop', description='twinloop: language instructions to verified motion.')
    commands = parser.add_subparsers(dest='command', required=True)
    commands.add_parser('doctor', help='report what works on this machine and what to do about the rest')
    demo = commands.add_parser('demo', help='run the simulated loop: world_sim + a pick-and-place instruction')
    demo.add_argument('--instruction', default='put the red cube in the bowl', help='what the arm should do')
    demo.add_argument('--scene', default=None, help='scene YAML (default: config/scenes/tabletop.yaml)')
    demo.add_argument('--runs-dir', default='runs', help='where run reports are written')
    demo.add_argument('--timeout', type=float, default=240.0, help='wall-clock limit [s]')
    demo.add_argument('--no-record', action='store_true', help='do not record the run to a rosbag2 (MCAP) folder')
    run = commands.add_parser('run', help='start a graph from config/graphs.yaml until Ctrl-C or a node dies')
    run.add_argument('graph', help='graph name, e.g. sim_arm, sim_twin_scoring, cameras_only')
    run.add_argument('--scene', default=None, help='scene YAML (default: config/scenes/tabletop.yaml)')
    args = parser.parse_args(argv)
    if args.command == 'run':
        return run_graph(args.graph, args.scene)
    if args.command == 'doctor':
        from twinloop_bringup import doctor

        return doctor.main()
    from twinloop_bringup import demo as demo_module, ros_env

    scene_path = args.scene or str(ros_env.config_dir() / 'scenes' / 'tabletop.yaml')
    return demo_module.run(args.instruction, scene_path, args.runs_dir, args.timeout, record=not args.no_record)


def run_graph(graph, scene=None):
    """Run a graph in this shell's ROS domain (so your own nodes can talk to it)."""
    import os

    from twinloop_bringup import graphs, ros_env

    scene = scene or str(ros_env.config_dir() / 'scenes' / 'tabletop.yaml')
    env = ros_env.dds_environment(os.environ.get('ROS_DOMAIN_ID'))
    specs = graphs.load(graph, {'scene': scene})
    nodes = ', '.join(s.name for s in specs)
    print(f'twinloop: starting {graph}: {nodes} (ROS_DOMAIN_ID={env.get("ROS_DOMAIN_ID", "0")})')
    with graphs.Supervisor(specs, env) as supervisor:
        try:
            supervisor.wait()
        except graphs.GraphFailure as exc:
            print(f'twinloop: {exc}; stopping the graph')
            return 1
        except KeyboardInterrupt:
            print('twinloop: stopping the graph')
    return 0


if __name__ == '__main__':
    sys.exit(main())
