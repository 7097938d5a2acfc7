"""twinloop execution: the execution node, kinematics, time parametrisation and the safety gate for
the arm."""
