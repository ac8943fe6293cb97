"""foveal.apps: demo applications."""
