"""twinloop planning: the task_orchestrator node, instruction grounding, run reports, and the
engines' ports on ROS and in process."""
