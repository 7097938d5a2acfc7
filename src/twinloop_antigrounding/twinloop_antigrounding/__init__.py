"""twinloop_antigrounding: the AntiGrounding decision engine (shared/seeds/000)."""
