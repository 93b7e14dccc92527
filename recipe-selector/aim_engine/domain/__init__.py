"""Domain values: GPU products, models, recipes, vLLM arguments, quantities and the error types.

Typed, immutable, parsed from plain data. No rules that relate them, no I/O."""
