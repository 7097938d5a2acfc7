"""twinloop scoring: VLM backends, AntiGrounding's structured VQA, multi-agent view fusion."""
