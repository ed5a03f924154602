"""Queue-depth autoscaling: the pure policy, the loop, graceful scale-down."""
