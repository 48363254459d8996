"""Jobs: the ``fleetmine`` CLI, Ray job entry points, scheduling, benchmarks."""
