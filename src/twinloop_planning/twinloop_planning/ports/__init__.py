"""twinloop_core ports for engines: on ROS (ros.py, what the orchestrator hands an engine) and on
in-process parts (in_process.py for SimWorld, libero.py for LIBERO: benchmarks and tests)."""
