"""twinloop twin: MuJoCo scenes built from YAML, the simulated world, and the sim twin."""
