"""The performance suite (issue 10): every speed and memory goal as a ratio measured in one run."""
