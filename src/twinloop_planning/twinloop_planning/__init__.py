"""twinloop planning: the task_orchestrator node, run reports, and the
engines' ports on ROS and in process."""
