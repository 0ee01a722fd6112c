"""Which parallel layout fits: candidates, memory and communication per device, a ranking (no GPU, no data,
no megatron; DeepSpeed is imported only inside the function that calls its estimators)."""
