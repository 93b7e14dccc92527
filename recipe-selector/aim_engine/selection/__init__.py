"""Recipe selection: the fallback levels of seed 004's algorithm over the catalog, the rules and the
inventory. Pure."""
