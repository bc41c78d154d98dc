"""The evaluate stage: lm-eval tasks, the sandbox for model-written code, the packaged data."""
