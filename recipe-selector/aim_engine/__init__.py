"""aim-engine: recipe-aware deployment of vLLM on AMD Instinct and NVIDIA GPUs.

The pure core (hardware, models, memory, recipe, inventory, compat, selection, lint, perf) works on
typed values and does no I/O. The edges (catalog file loading, kube, hook, cli) sit around it.
"""

__version__ = "0.1.0"
