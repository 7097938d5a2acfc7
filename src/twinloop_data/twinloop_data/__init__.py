"""twinloop_data: demonstrations (the LIBERO expert) and the LeRobot-format writer."""
