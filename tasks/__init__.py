"""foveal.tasks: Lightning tasks, data, the foveal CLI and the benchmark runner."""
