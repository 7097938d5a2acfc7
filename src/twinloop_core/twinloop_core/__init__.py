"""twinloop_core: the ROS-free contracts (types, ports, engines) every twinloop package shares."""
