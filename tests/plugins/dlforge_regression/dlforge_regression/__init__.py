"""dlforge-regression: a third-party dlforge plugin (the worked example of docs/plugins.md).

`task: regression` (features → one number), the `diabetes` data set, the `mlp_regressor` architecture and
the `gated_dense` layer. Nothing is imported here: dlforge imports `plugin` when it first looks into a
registry, and the task's modules when a run, an export or a server asks for the task.
"""
