"""twinloop bringup: the `twinloop` command, DDS settings and the graphs that run twinloop."""
