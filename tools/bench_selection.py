#!/usr/bin/env python3
"""Selection benchmark: prints figures, asserts nothing.

Catalogs of 100 / 1,000 / 10,000 recipes against clusters of 10 / 1,000 / 5,000 nodes (two pods
per node), in one process as `aim-recipes select` runs (catalog and inventory frozen out of the
cyclic GC once loaded, the collector paused while the inventory is built and while selecting).
Worst case for the selector: every recipe is for the requested model, so every one is evaluated
(feasibility, memory plan, capacity, ranking). Reported: the median of several runs of select()
on typed inputs, and, apart, the median of as many builds of the inventory from Node/Pod JSON
(each with the quantity cache emptied, as the CLI builds once). `--distinct` gives every
recipe its own configuration, the worst case for select()'s one judgement per configuration.

    make bench            (or: .tools/venv/bin/python tools/bench_selection.py [--repeat N]
                           [--recipes 100 1000 ...] [--nodes 10 1000 ...])
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from aim_engine.adapters.catalog import load_bundle  # noqa: E402
from aim_engine.cli.collector import collector_paused  # noqa: E402
from aim_engine.cluster.inventory import build_inventory  # noqa: E402
from aim_engine.domain.quantity import _parse_text  # noqa: E402
from aim_engine.domain.recipe import Performance, Recipe  # noqa: E402
from aim_engine.selection.request import Request  # noqa: E402
from aim_engine.selection.selector import select  # noqa: E402
from k8s_objects import amd_node, gfd_node, pod  # noqa: E402

MODEL = "meta-llama/Llama-3.1-70B-Instruct"
HARDWARE = [
    ("MI300X", "amd.com/gpu"),
    ("MI325X", "amd.com/gpu"),
    ("H100", "nvidia.com/gpu"),
    ("H200", "nvidia.com/gpu"),
    ("A100", "nvidia.com/gpu"),
    ("L40S", "nvidia.com/gpu"),
]


def catalog(n: int, rng: random.Random, *, distinct: bool = False) -> list[Recipe]:
    """`distinct`: every recipe its own configuration (a unique max_num_seqs), so no two share a
    judgement (select() judges each configuration once: the worst case for that)."""
    out = []
    for i in range(n):
        hw, res = HARDWARE[i % len(HARDWARE)]
        gpus = [1, 2, 4, 8][(i // len(HARDWARE)) % 4]
        precision = "bf16" if hw == "A100" or i % 2 else "fp8"
        out.append(
            Recipe(
                recipe_id=f"bench-{i}",
                huggingface_id=MODEL,
                hardware=hw,
                gpu_count=gpus,
                precision=precision,
                backend="vllm",
                type=["optimized", "preview", "unoptimized"][i % 3],
                priority=rng.randrange(0, 1000),
                args={
                    "tensor_parallel_size": gpus,
                    "max_model_len": rng.choice([8192, 32768, 65536, 131072]),
                    "gpu_memory_utilization": 0.9,
                    **({"max_num_seqs": 1 + i} if distinct else {}),
                    **({"quantization": "fp8"} if precision == "fp8" else {}),
                },
                performance=Performance(
                    tokens_per_second=Decimal(1000 + i), latency_ms=Decimal(20), conditions={}, provenance={}
                ),
                requests={res: Decimal(gpus)},
                limits={res: Decimal(gpus)},
            )
        )
    return out


def cluster(n: int, rng: random.Random) -> tuple[list[dict], list[dict]]:
    nodes, pods = [], []
    for i in range(n):
        hw, res = HARDWARE[i % len(HARDWARE)]
        name = f"node-{i}"
        nodes.append((amd_node if res == "amd.com/gpu" else gfd_node)(name, hw if hw != "MI325X" else "MI325X", gpus=8))
        for j in range(2):
            pods.append(pod(f"p-{i}-{j}", name, gpus=rng.choice([0, 1, 2, 4]), resource=res))
    return nodes, pods


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5, help="runs of select() per row (the median is reported)")
    parser.add_argument("--recipes", type=int, nargs="+", default=[100, 1000, 10000], help="catalog sizes")
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 1000, 5000], help="cluster sizes")
    parser.add_argument("--distinct", action="store_true", help="every recipe a distinct configuration (no shared judgements)")
    args = parser.parse_args()
    rng = random.Random(42)
    bundle = load_bundle()
    models = bundle.model_map()
    header = f"{'recipes':>8} {'nodes':>6} {'select median ms':>17} {'select min ms':>14} {'inventory median ms':>20}"
    print(f"{header} {'result':>24}")
    for n_nodes in args.nodes:
        nodes, pods = cluster(n_nodes, rng)
        gc.freeze()  # as `aim-recipes select` does once the cluster's objects are loaded
        builds = []
        for _ in range(args.repeat):
            _parse_text.cache_clear()  # each build as the CLI's one build: nothing cached from the last
            t0 = time.perf_counter()
            with collector_paused():  # as the CLI builds it
                inv = build_inventory(bundle.hardware, nodes, pods)
            builds.append((time.perf_counter() - t0) * 1000)
        inv_ms = statistics.median(builds)
        del nodes, pods  # as in `aim-recipes select`: the raw JSON is dropped once the inventory exists
        for n_recipes in args.recipes:
            recipes = catalog(n_recipes, rng, distinct=args.distinct)
            gc.freeze()  # as `aim-recipes select` does once catalog and inventory are loaded
            times = []
            sel = None
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                with collector_paused():  # as the CLI selects
                    sel = select(
                        request=Request(model_id=MODEL),
                        recipes=recipes,
                        models=models,
                        catalog=bundle.hardware,
                        registry=bundle.registry,
                        inventory=inv,
                    )
                times.append((time.perf_counter() - t0) * 1000)
            assert sel is not None
            print(
                f"{n_recipes:>8} {n_nodes:>6} {statistics.median(times):>17.1f} {min(times):>14.1f} {inv_ms:>20.1f} "
                f"{sel.result + '/' + str(sel.level):>24}"
            )


if __name__ == "__main__":
    main()
