"""twinloop execution: kinematics, time parametrisation and the safety gate for the arm."""
