"""Which model a container serves, read as vLLM, Kubernetes and the shell read the command line,
and the rule that it must be the recipe's (aim_engine.rules.served_model.served_model / model_findings).
Also: every chart scenario's rendered workload passes the rule against its own selection."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aim_engine.adapters.catalog import load_bundle
from aim_engine.contract import SERVED_MODEL_ANNOTATION
from aim_engine.rules.pod import delegated, parse_workload
from aim_engine.rules.served_model import model_findings, same_model, served_model
from aim_engine.rules.workload import Toggles, check_workload
from aim_webhook.mutate import apply, mutate

ROOT = Path(__file__).resolve().parent.parent.parent
BUNDLE = load_bundle(ROOT / "recipes")
QWEN = "Qwen/Qwen3-32B"
RECIPE = next(r for r in BUNDLE.recipes if r.recipe_id == "qwen3-32b-mi300x-1gpu-fp8")


def refs(container: dict[str, Any]) -> list[tuple[str, str, str]]:
    served = served_model(container, BUNDLE.registry)
    assert not served.unreadable, served.unreadable
    return [(inv.program, ref.written, ref.value) for inv in served.invocations for ref in inv.refs]


def codes(container: dict[str, Any], declared: str | None = None, elsewhere: str | None = None) -> list[str]:
    found = model_findings(
        container,
        RECIPE,
        where="c",
        declared_on_template=declared,
        declared_elsewhere=elsewhere,
        registry=BUNDLE.registry,
    )
    return [f.code for f in found]


SERVE = "`vllm serve`"
API = "`python -m vllm.entrypoints.openai.api_server`"
ENTRY = "the image's entrypoint"


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        ({"command": ["vllm", "serve", QWEN]}, [(SERVE, "positional argument", QWEN)]),
        ({"command": ["/usr/local/bin/vllm"], "args": ["serve", QWEN, "-tp", "1"]}, [(SERVE, "positional argument", QWEN)]),
        ({"args": [QWEN, "--port", "8000"]}, [(ENTRY, "positional argument", QWEN)]),
        ({"args": ["--model", QWEN]}, [(ENTRY, "--model", QWEN)]),
        ({"args": [f"--model={QWEN}"]}, [(ENTRY, "--model=", QWEN)]),
        # Flags before the positional: a value flag takes its value, a switch takes none.
        ({"command": ["vllm", "serve", "--port", "8000", QWEN]}, [(SERVE, "positional argument", QWEN)]),
        ({"command": ["vllm", "serve", "--enforce-eager", QWEN]}, [(SERVE, "positional argument", QWEN)]),
        ({"command": ["vllm", "serve", "--headless", QWEN]}, [(SERVE, "positional argument", QWEN)]),
        ({"command": ["vllm", "serve", "--no-enable-prefix-caching", QWEN]}, [(SERVE, "positional argument", QWEN)]),
        ({"command": ["vllm", "serve", "--seed", "-1", QWEN]}, [(SERVE, "positional argument", QWEN)]),
        # Both the positional and --model: both are read (vLLM would refuse two models anyway).
        (
            {"command": ["vllm", "serve", QWEN, "--model", "x/y"]},
            [(SERVE, "positional argument", QWEN), (SERVE, "--model", "x/y")],
        ),
        ({"command": ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", QWEN]}, [(API, "--model", QWEN)]),
        (
            {"command": ["python3.12", "-u", "-m", "vllm.entrypoints.cli.main", "serve", QWEN]},
            [(SERVE, "positional argument", QWEN)],
        ),
        ({"command": ["env", "HF_HUB_OFFLINE=1", "vllm", "serve", QWEN]}, [(SERVE, "positional argument", QWEN)]),
        # The chart's own single pod and LeaderWorkerSet leader.
        (
            {"command": ["vllm", "serve", QWEN], "args": ["--host", "0.0.0.0", "--port", "8000"]},
            [(SERVE, "positional argument", QWEN)],
        ),
        (
            {
                "command": [
                    "sh",
                    "-c",
                    "set -e\nray start --head --port=6379 --disable-usage-stats\n"
                    'until [ "$(python3 -c \'import ray; print(1)\')" -ge "${LWS_GROUP_SIZE:-1}" ]; do\n'
                    '  echo "waiting"; sleep 5\ndone\n'
                    f'exec vllm serve "{QWEN}" "$@"\n',
                    "vllm",
                ],
                "args": ["--host", "0.0.0.0"],
            },
            [(SERVE, "positional argument", QWEN)],
        ),
        # "$@" carries the container's arguments after $0 into the script's vllm serve.
        (
            {"command": ["sh", "-c", 'exec vllm serve "$@"', "vllm"], "args": [QWEN, "-tp", "1"]},
            [(SERVE, "positional argument", QWEN)],
        ),
        (
            {"command": ["/bin/bash", "-ec"], "args": [f"vllm serve {QWEN} 2>&1 | tee /tmp/log"]},
            [(SERVE, "positional argument", QWEN)],
        ),
        (
            {"command": ["sh", "-c", f"# vllm serve other/model\nvllm serve \\\n  {QWEN} --port 8000"]},
            [(SERVE, "positional argument", QWEN)],
        ),
        # Kubernetes expands $(VAR) from the container's env; the shell expands $VAR.
        ({"args": ["--model", "$(MODEL)"], "env": [{"name": "MODEL", "value": QWEN}]}, [(ENTRY, "--model", QWEN)]),
        ({"args": ["--model", "$$(MODEL)"], "env": [{"name": "MODEL", "value": QWEN}]}, [(ENTRY, "--model", "$(MODEL)")]),
        (
            {"command": ["sh", "-c", 'vllm serve "${MODEL}"'], "env": [{"name": "MODEL", "value": QWEN}]},
            [(SERVE, "positional argument", QWEN)],
        ),
    ],
)
def test_where_the_model_is_written(container, expected):
    assert refs(container) == expected


@pytest.mark.parametrize(
    "container",
    [
        {"command": ["/app/start.sh"]},
        {"command": ["sh", "-c", "ray start --block --address=$(LWS_LEADER_ADDRESS):6379"]},
        {"command": ["sh", "-c", "vllm serve 'unbalanced"]},
    ],
)
def test_a_command_that_runs_no_readable_vllm_needs_the_declaration(container):
    assert served_model(container, BUNDLE.registry).unreadable
    assert codes(container) == ["MODEL_UNVERIFIED"]
    assert codes(container, declared=QWEN) == []


@pytest.mark.parametrize(
    "container",
    [
        {
            "args": ["--model", "$(MODEL)"],
            "env": [{"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "m", "key": "id"}}}],
        },
        {"args": ["--model", "$(MODEL)"]},  # envFrom or nothing: unknown before the container runs
        {"command": ["sh", "-c", "vllm serve $MODEL"]},
        {"command": ["vllm", "serve", "--config", "/etc/vllm/config.yaml"]},
    ],
)
def test_a_model_known_only_at_run_time_needs_the_declaration(container):
    assert codes(container) == ["MODEL_UNVERIFIED"]
    assert codes(container, declared=QWEN) == []
    assert codes(container, declared="meta-llama/Llama-3.1-8B-Instruct") == ["MODEL_MISMATCH"]


@pytest.mark.parametrize(
    "container",
    [
        {"command": ["vllm", "serve"], "args": ["--port", "8000"]},
        {"command": ["python3", "-m", "vllm.entrypoints.openai.api_server", QWEN]},  # that module ignores positionals
        {"command": ["sh", "-c", "exec vllm serve --port 8000"]},
    ],
)
def test_no_model_means_vllms_default_whatever_the_annotation(container):
    assert codes(container) == ["MODEL_MISSING"]
    assert codes(container, declared=QWEN) == ["MODEL_MISSING"]


def test_args_only_naming_no_model_may_be_declared():
    """No command: the image's entrypoint runs. vLLM's images run `vllm serve` (then vLLM's default
    model); an image of one's own may name the model itself, which the declaration says."""
    container = {"args": ["--port", "8000"]}
    assert codes(container) == ["MODEL_MISSING"]
    assert codes(container, declared=QWEN) == []


def test_a_path_or_mirror_is_the_recipes_model_only_when_declared():
    for value in ("/models/qwen3-32b", "s3://bucket/qwen3-32b", "my-org/Qwen3-32B-mirror"):
        container = {"command": ["vllm", "serve", value], "args": ["--served-model-name", QWEN]}
        assert codes(container) == ["MODEL_MISMATCH"], value  # --served-model-name proves nothing
        assert codes(container, declared=QWEN) == [], value
        assert codes(container, declared=QWEN.lower()) == [], value
        assert codes(container, elsewhere=QWEN) == ["MODEL_MISMATCH"], value


def test_the_fix_says_what_to_change():
    container = {"command": ["vllm", "serve", "/models/qwen3-32b"]}
    (finding,) = model_findings(
        container, RECIPE, where="c", declared_on_template=None, declared_elsewhere=None, registry=BUNDLE.registry
    )
    assert "serves /models/qwen3-32b (positional argument to `vllm serve`)" in finding.message
    assert "recipe qwen3-32b-mi300x-1gpu-fp8 is for Qwen/Qwen3-32B" in finding.message
    assert f"annotate the pod template with {SERVED_MODEL_ANNOTATION}: {QWEN}" in finding.fix
    (moved,) = model_findings(
        container, RECIPE, where="c", declared_on_template=None, declared_elsewhere=QWEN, registry=BUNDLE.registry
    )
    assert "to the pod template's" in moved.fix
    (other,) = model_findings(
        {"command": ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct"]},
        RECIPE,
        where="c",
        declared_on_template=None,
        declared_elsewhere=None,
        registry=BUNDLE.registry,
    )
    assert other.fix.startswith(f"serve {QWEN}, or use a recipe for meta-llama/Llama-3.1-8B-Instruct")


@pytest.mark.parametrize(
    ("found", "expected", "same"),
    [
        ("qwen/qwen3-32b", QWEN, True),
        (" Qwen/Qwen3-32B ", QWEN, True),
        ("Qwen/Qwen3-32B-FP8", QWEN, False),
        ("Qwen/Qwen3-8B", QWEN, False),
        ("/models/Qwen3-32B/", "/models/Qwen3-32B", True),
        ("/models/qwen3-32b", "/models/Qwen3-32B", False),  # file systems are case-sensitive
        ("s3://b/Qwen3-32B", "s3://b/qwen3-32b", False),
    ],
)
def test_same_model(found, expected, same):
    assert same_model(found, expected) is same


# The chart's own workloads ---------------------------------------------------------------------

sys.path.insert(0, str(ROOT / "tools"))
import render_chart  # noqa: E402

DEFAULT_MODEL = yaml.safe_load((ROOT / "chart/values.yaml").read_text())["aim_engine"]["model_id"]


def _scenarios() -> list[Path]:
    return sorted((ROOT / "chart/ci").glob("*-values.yaml"))


def _judge(obj: dict[str, Any], recipe_model: str) -> list[str]:
    kind = obj["kind"]
    workload = parse_workload(obj, kind=kind, namespace="aim-engine")
    assert workload is not None
    recipe = next(r for r in BUNDLE.recipes if r.model_key == recipe_model.lower() and r.nodes == max(1, workload.group_size))
    if delegated(workload):  # as the webhook judges `recipe-id: selected`: the controller as injected
        workload = parse_workload(
            apply(obj, mutate(workload, recipe, catalog=BUNDLE.hardware).patch), kind=kind, namespace="aim-engine"
        )
        assert workload is not None
    found = check_workload(
        workload,
        recipe,
        model=BUNDLE.models.get(recipe.huggingface_id),
        catalog=BUNDLE.hardware,
        registry=BUNDLE.registry,
        toggles=Toggles(),
    )
    return [f.code for f in found if f.code.startswith("MODEL_")]


@pytest.mark.integration  # renders the chart with Helm
@pytest.mark.parametrize("values", _scenarios(), ids=lambda p: p.name)
def test_every_chart_scenario_serves_its_selections_model(values):
    """Each rendered vLLM workload that names a recipe passes the model rule against a recipe for
    the scenario's model, and is refused against another model's."""
    if not render_chart.HELMS["helm3"].exists():
        pytest.fail("helm missing: run make setup")
    docs = render_chart.render(render_chart.HELMS["helm3"], render_chart.release_for(values), values)
    model = ((yaml.safe_load(values.read_text()) or {}).get("aim_engine") or {}).get("model_id") or DEFAULT_MODEL
    judged = 0
    for obj in docs:
        if (
            obj["kind"] not in ("Deployment", "LeaderWorkerSet")
            or obj["metadata"]["labels"].get("app.kubernetes.io/component") != "inference"
        ):
            continue
        if parse_workload(obj, kind=obj["kind"], namespace="aim-engine") is None:
            continue  # manual mode: no recipe, not policed
        judged += 1
        assert _judge(obj, model) == [], values.name
        other = "meta-llama/Llama-3.1-8B-Instruct" if obj["kind"] == "Deployment" else "meta-llama/Llama-3.1-405B-Instruct"
        assert "MODEL_MISMATCH" in _judge(obj, other), values.name
    assert judged or "manual" in values.name
