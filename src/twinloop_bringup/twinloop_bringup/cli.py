"""The `twinloop` command."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog='twinloop', description='twinloop: language instructions to verified motion.')
    commands = parser.add_subparsers(dest='command', required=True)
    commands.add_parser('doctor', help='report what works on this machine and what to do about the rest')
    demo = commands.add_parser('demo', help='run the simulated loop: world_sim + a pick-and-place instruction')
    demo.add_argument('--instruction', default='put the red cube in the bowl', help='what the arm should do')
    demo.add_argument('--scene', default=None, help='scene YAML (default: config/scenes/tabletop.yaml)')
    demo.add_argument('--runs-dir', default='runs', help='where run reports are written')
    demo.add_argument('--timeout', type=float, default=240.0, help='wall-clock limit [s]')
    args = parser.parse_args(argv)
    if args.command == 'doctor':
        from twinloop_bringup import doctor
        return doctor.main()
    from twinloop_bringup import demo as demo_module, ros_env
    scene_path = args.scene or str(ros_env.config_dir() / 'scenes' / 'tabletop.yaml')
    return demo_module.run(args.instruction, scene_path, args.runs_dir, args.timeout)


if __name__ == '__main__':
    sys.exit(main())
