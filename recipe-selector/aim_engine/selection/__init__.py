"""Recipe selection: the fallback levels of seed 004's algorithm over the catalog, the rules and the
inventory. Pure.

  selector     select(): evaluate, rank, try the levels in order, explain the outcome
  request      Request: the model and the explicit overrides
  result       Selection, Candidate, and the Level, Verdict and Result types
  feasibility  a recipe against the overrides, the rules and the cluster's free GPUs (Evaluated)
  levels       one function per fallback level: primary, secondary, tertiary, default
  derive       the tertiary level's configurations, adapted from a catalog recipe
  synthesis    the default level's generic recipe, built from the model analysis
  sizing       how many GPUs and how much context a built configuration gets
"""
