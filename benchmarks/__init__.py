"""The performance suite: every speed and memory goal as a ratio measured in one run."""
