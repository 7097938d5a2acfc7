"""twinloop planning: instruction grounding, AntiGrounding's annealed candidate sampling."""
