"""twinloop_scripted: the scripted pick-and-place baseline engine (not AntiGrounding)."""
