"""The rules relating domain values: memory plans, expected performance, ranking, "this recipe fits
this model on this hardware" (compat), what a workload must look like for its recipe (workload) and
catalog soundness (lint). Pure functions."""
