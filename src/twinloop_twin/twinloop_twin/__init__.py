"""twinloop twin: MuJoCo scenes built from YAML, the simulated worlds (world_sim, LIBERO), and the
sim twin."""
