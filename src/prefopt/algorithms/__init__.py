"""Built-in algorithms. Each module is a plugin registered through prefopt's own entry points
(``[project.entry-points.prefopt]`` in pyproject.toml), exactly as a third party's would be."""
