"""vLLM engine arguments: the registry of flags a recipe may set (recipes/vllm/engine-args.yaml),
checking values against it, and turning an args mapping into the command line vLLM takes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aim_engine.domain.errors import InputError


@dataclass(frozen=True, slots=True)
class ArgSpec:
    name: str
    type: str  # int | float | bool | str | json
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class ArgRegistry:
    specs: Mapping[str, ArgSpec]
    translations: Mapping[str, str]
    _memo: dict[tuple[str, type, object], str | None] = field(default_factory=dict, compare=False, repr=False)

    def canonical(self, name: str) -> str:
        """A seed key vLLM has no flag for becomes the flag it means (max_batch_size -> max_num_seqs)."""
        key = name.replace("-", "_")
        return self.translations.get(key, key)

    def check(self, name: str, value: object) -> str | None:
        """None when vLLM accepts `--name value`; otherwise what is wrong (memoised for scalars)."""
        if isinstance(value, str | int | float | bool | None):
            key = (name, type(value), value)
            if key not in self._memo:
                if len(self._memo) > 65536:
                    self._memo.clear()
                self._memo[key] = self._check(name, value)
            return self._memo[key]
        return self._check(name, value)

    def _check(self, name: str, value: object) -> str | None:
        spec = self.specs.get(name)
        if spec is None:
            return f"{name!r} is not a vLLM engine argument aim-engine knows (see recipes/vllm/engine-args.yaml)"
        return _check_value(spec, value)


def _check_value(spec: ArgSpec, value: object) -> str | None:
    t = spec.type
    if t == "bool":
        if not isinstance(value, bool):
            return f"{spec.name} must be true or false, got {value!r}"
        return None
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{spec.name} must be an integer, got {value!r}"
    elif t == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{spec.name} must be a number, got {value!r}"
    elif t == "str":
        if not isinstance(value, str) or not value:
            return f"{spec.name} must be a non-empty string, got {value!r}"
    elif t == "json":
        if not isinstance(value, dict | list | str):
            return f"{spec.name} must be an object or a JSON string, got {value!r}"
        if isinstance(value, str):
            try:
                json.loads(value)
            except ValueError:
                return f"{spec.name} is not valid JSON: {value!r}"
        return None
    if spec.choices is not None and value not in spec.choices:
        return f"{spec.name}={value!r} is not accepted by vLLM; choose one of {', '.join(map(str, spec.choices))}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.min is not None and value < spec.min:
            return f"{spec.name}={value} is below the minimum {spec.min}"
        if spec.max is not None and value > spec.max:
            return f"{spec.name}={value} is above the maximum {spec.max}"
    return None


def parse_registry(doc: Mapping[str, Any]) -> ArgRegistry:
    raw_args = doc.get("args")
    if not isinstance(raw_args, Mapping):
        raise InputError("engine-args.yaml: 'args' must be a mapping")
    specs: dict[str, ArgSpec] = {}
    for name, raw in raw_args.items():
        if not isinstance(raw, Mapping) or raw.get("type") not in ("int", "float", "bool", "str", "json"):
            raise InputError(f"engine-args.yaml: {name}: type must be int, float, bool, str or json")
        choices = raw.get("choices")
        specs[str(name)] = ArgSpec(
            name=str(name),
            type=str(raw["type"]),
            choices=tuple(choices) if choices is not None else None,
            min=raw.get("min"),
            max=raw.get("max"),
        )
    translations = {str(k): str(v) for k, v in (doc.get("translations") or {}).items()}
    for key, target in translations.items():
        if target not in specs:
            raise InputError(f"engine-args.yaml: translation {key} -> {target}: {target} is not an argument")
    return ArgRegistry(specs=specs, translations=translations)


def to_cli(args: Mapping[str, Any]) -> list[str]:
    """Engine args as vLLM command-line flags, in a stable order (sorted by name).

    true -> --flag, false -> --no-flag (BooleanOptionalAction), objects -> compact JSON, None skipped.
    """
    out: list[str] = []
    for name in sorted(args):
        value = args[name]
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + name.replace("_", "-"))
        elif isinstance(value, dict | list):
            out.extend([flag, json.dumps(value, separators=(",", ":"), sort_keys=True)])
        else:
            out.extend([flag, str(value)])
    return out
