"""The `twinloop` command."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog='twinloop', description='twinloop: language instructions to verified motion.')
    commands = parser.add_subparsers(dest='command', required=True)
    commands.add_parser('doctor', help='report what works on this machine and what to do about the rest')
    args = parser.parse_args(argv)
    if args.command == 'doctor':
        from twinloop_bringup import doctor
        return doctor.main()
    return 2


if __name__ == '__main__':
    sys.exit(main())
