"""Send an instruction to a running twinloop graph from your own node, nav2 BasicNavigator style.

. ./twinloop_env.sh
python -m twinloop_bringup.cli run sim_demo &          # or: ros2 launch twinloop_bringup sim_demo.launch.py
python examples/send_instruction.py "put the red cube in the bowl" [--cancel-after 10]
"""

import argparse
import time

import rclpy

from twinloop_bringup.client import InstructionClient


def main():
    """Send the instruction, print each new feedback stage and step; exit code 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('instruction')
    parser.add_argument('--strategy', default='', help='anti_grounding (default of the server) or scripted_pick_place')
    parser.add_argument('--timeout', type=float, default=300.0)
    parser.add_argument('--cancel-after', type=float, default=0.0, help='cancel after this many seconds (0: never)')
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node('send_instruction')
    client = InstructionClient(node)
    try:
        client.send(args.instruction, strategy=args.strategy, timeout=args.timeout)
        started, last = time.monotonic(), None
        while not client.is_done():
            feedback = client.feedback()
            if feedback is not None and (feedback.stage, feedback.step) != last:
                last = (feedback.stage, feedback.step)
                print(
                    f'{feedback.stage:9s} step {feedback.step} sub-task {feedback.subtask}: '
                    f'{feedback.chosen_candidate} [{feedback.backend}]'
                )
            if args.cancel_after and time.monotonic() - started > args.cancel_after:
                client.cancel()
                print('cancel requested')
                args.cancel_after = 0.0
        result = client.result()
        print(
            f'{"SUCCESS" if result.success else "FAILURE"}: {result.reason} '
            f'({result.elapsed:.0f} s, report {result.report_path})'
        )
        return 0 if result.success else 1
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == '__main__':
    raise SystemExit(main())
