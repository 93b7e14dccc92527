"""Which model a container serves, read as vLLM reads its command line, and the rule that it must
be its recipe's model (model_findings). Pure."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aim_engine.contract import (
    SERVED_MODEL_ANNOTATION,
    SIMULATOR_PROGRAM,
)
from aim_engine.domain.recipe import Recipe
from aim_engine.domain.vllm_args import ArgRegistry
from aim_engine.rules.compat import Finding
from aim_engine.rules.pod import as_list

# Which model a container serves -------------------------------------------------------------------
#
# vLLM's semantics (docs/webhook.md, "The served model"): `vllm serve MODEL`, `vllm serve --model
# MODEL` (vLLM moves it to the positional's place; both at once is an error, and both are read
# here), `python -m vllm.entrypoints.openai.api_server --model MODEL` (that module parses but
# ignores a positional), a container with args only (the image's entrypoint,
# `vllm serve` in vLLM's images), and any of these inside a `sh -c` script, with "$@" standing for
# the container's remaining arguments. Kubernetes expands `$(VAR)` in command and args from the
# container's env before anything runs; a shell script's `$VAR` / `${VAR}` is read from the same
# env when it holds a literal value.

# What vLLM loads when the command line names no model (EngineArgs.model's default since vLLM 0.10;
# facebook/opt-125m before).
VLLM_DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
# vLLM flags that take no value and are not in the engine-args registry (whose bool flags take none
# either): reading `vllm serve --headless MODEL` must not take MODEL for --headless's value.
VALUELESS_FLAGS: frozenset[str] = frozenset(
    {
        "allow_credentials",
        "disable_async_output_proc",
        "disable_cascade_attn",
        "disable_fastapi_docs",
        "disable_frontend_multiprocessing",
        "disable_log_requests",
        "disable_log_stats",
        "disable_sliding_window",
        "disable_uvicorn_access_log",
        "enable_dbo",
        "enable_eplb",
        "enable_force_include_usage",
        "enable_log_outputs",
        "enable_log_requests",
        "enable_lora",
        "enable_prompt_tokens_details",
        "enable_request_id_headers",
        "enable_server_load_tracking",
        "enable_sleep_mode",
        "enable_ssl_refresh",
        "enable_tokenizer_info_endpoint",
        "grpc",
        "headless",
        "help",
        "return_tokens_as_token_ids",
        "skip_tokenizer_init",
        "version",
    }
)
SHORT_VALUE_FLAGS: frozenset[str] = frozenset({"-tp", "-pp", "-dp", "-q", "-asc", "-O"})
SHELLS: frozenset[str] = frozenset({"sh", "bash", "dash", "ash", "zsh"})
_WRAPPERS = frozenset({"exec", "env", "nohup", "command"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_KUBE_REF = re.compile(r"\$\$|\$\(([^()$]*)\)")
_SHELL_REF = re.compile(r"^\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})$")
_NEGATIVE_NUMBER = re.compile(r"^-\d")
_SEPARATORS = frozenset(";&|()<>\n")
# A Hugging Face repository id (`owner/name`, or a legacy `name`): matched case-insensitively.
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
ENTRYPOINT = "the image's entrypoint"


@dataclass(frozen=True, slots=True)
class ModelRef:
    """One place a command line names the model: the value (after Kubernetes' `$(VAR)` expansion)
    and how it is written (positional argument, --model, --model=)."""

    value: str
    written: str

    @property
    def dynamic(self) -> bool:
        """A variable nobody can read before the container runs (valueFrom, envFrom, the image's ENV)."""
        return "$" in self.value


@dataclass(frozen=True, slots=True)
class Invocation:
    """One run of vLLM's OpenAI server found in a container's command."""

    program: str  # `vllm serve` | `python -m vllm.entrypoints.openai.api_server` | the image's entrypoint
    refs: tuple[ModelRef, ...]
    config_file: bool = False  # --config FILE: the file may name the model
    ignored_positional: str | None = None  # the api_server module ignores a positional model


@dataclass(frozen=True, slots=True)
class ServedModel:
    """What a container's command line says about the model it serves."""

    invocations: tuple[Invocation, ...]
    unreadable: str = ""  # why no vLLM invocation can be read ("" when one can)


def same_model(found: str, expected: str) -> bool:
    """Hugging Face ids compare case-insensitively (the Hub resolves `qwen/qwen3-32b` to
    `Qwen/Qwen3-32B`, and the selector matches model ids the same way); paths and URIs exactly,
    ignoring a trailing slash (file systems and buckets are case-sensitive)."""
    a, b = found.strip(), expected.strip()
    if HUB_ID.match(a) and HUB_ID.match(b):
        return a.casefold() == b.casefold()
    return a.rstrip("/") == b.rstrip("/")


def _literal_env(container: Mapping[str, Any]) -> dict[str, str | None]:
    """The container's env: name -> literal value, or None when it is only known at run time."""
    out: dict[str, str | None] = {}
    env = container.get("env")
    for item in env if isinstance(env, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            value = item.get("value")
            out[item["name"]] = None if item.get("valueFrom") is not None else ("" if value is None else str(value))
    return out


def _kube_expand(token: str, env: Mapping[str, str | None]) -> str:
    """Kubernetes' expansion of command and args: `$(VAR)` -> the env value, `$$` -> `$`; a
    reference to a variable that is not set (or only set at run time) stays as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        value = env.get(m.group(1))
        return value if value is not None else m.group(0)

    return _KUBE_REF.sub(sub, token) if "$" in token else token


def _shell_expand(word: str, env: Mapping[str, str | None]) -> str:
    """A whole-word `$VAR` / `${VAR}` of a shell script, when the container's env sets it literally."""
    m = _SHELL_REF.match(word)
    if m is None:
        return word
    value = env.get(m.group(1) or m.group(2))
    return value if value else word


def _is_shell(tokens: Sequence[str]) -> bool:
    return len(tokens) >= 3 and tokens[0].rsplit("/", 1)[-1] in SHELLS and re.fullmatch(r"-[a-z]*c", tokens[1]) is not None


def _simple_commands(script: str) -> list[list[str]] | None:
    """The words of each simple command of a shell script (split at ; & | ( ) < > and newlines,
    comments dropped), or None when the script does not parse (unbalanced quotes)."""
    lex = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=";&|()<>\n")
    lex.whitespace = " \t\r"
    lex.whitespace_split = True
    try:
        tokens = list(lex)
    except ValueError:
        return None
    commands: list[list[str]] = []
    current: list[str] = []
    for tok in tokens:
        if tok and all(c in _SEPARATORS for c in tok):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(tok)
    if current:
        commands.append(current)
    return commands


def _invocation(words: Sequence[str]) -> tuple[str, list[str], bool] | None:
    """(program as written, its arguments, whether a positional names the model) when these words
    run vLLM's OpenAI server; None otherwise."""
    i = 0
    while i < len(words) and (words[i] in _WRAPPERS or _ASSIGNMENT.match(words[i])):
        i += 1
    if i >= len(words):
        return None
    program, rest = words[i].rsplit("/", 1)[-1], list(words[i + 1 :])
    if program == "vllm" and rest[:1] == ["serve"]:
        return "`vllm serve`", rest[1:], True
    if program == SIMULATOR_PROGRAM and rest[:1] == ["serve"]:  # vLLM's command line, served by the simulator
        return f"`{SIMULATOR_PROGRAM} serve`", rest[1:], True
    if re.fullmatch(r"python[0-9.]*", program):
        j = 0
        while j < len(rest) and rest[j].startswith("-") and rest[j] != "-m":
            j += 1
        if j + 1 < len(rest) and rest[j] == "-m":
            module, tail = rest[j + 1], rest[j + 2 :]
            if module == API_SERVER_MODULE:
                return f"`python -m {module}`", tail, False
            if module == "vllm.entrypoints.cli.main" and tail[:1] == ["serve"]:
                return "`vllm serve`", tail[1:], True
    return None


def _takes_value(name: str, registry: ArgRegistry) -> bool:
    if name.startswith("no_"):
        return False
    spec = registry.specs.get(registry.canonical(name))
    if spec is not None:
        return spec.type != "bool"
    return name not in VALUELESS_FLAGS


def _read_invocation(program: str, args: Sequence[str], *, positional: bool, registry: ArgRegistry) -> Invocation:
    """Where the arguments of one vLLM run name the model."""
    refs: list[ModelRef] = []
    config = False
    ignored: str | None = None
    seen_positional = False
    i = 0
    while i < len(args):
        tok = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else None
        value_next = nxt is not None and (not nxt.startswith("-") or _NEGATIVE_NUMBER.match(nxt) is not None)
        if tok.startswith("--") and len(tok) > 2:
            name, eq, value = tok[2:].partition("=")
            key = name.replace("-", "_")
            if key == "model":
                if eq:
                    refs.append(ModelRef(value, "--model="))
                elif nxt is not None and value_next:
                    refs.append(ModelRef(nxt, "--model"))
                    i += 1
            elif key == "config":
                config = True
                i += 1 if not eq and value_next else 0
            elif not eq and value_next and _takes_value(key, registry):
                i += 1
        elif tok.startswith("-") and len(tok) > 1 and _NEGATIVE_NUMBER.match(tok) is None:
            i += 1 if tok in SHORT_VALUE_FLAGS and value_next else 0
        elif positional and not seen_positional:
            refs.append(ModelRef(tok, "positional argument"))
            seen_positional = True
        elif not positional and ignored is None:
            ignored = tok
        i += 1
    return Invocation(program, tuple(refs), config, ignored)


def served_model(container: Mapping[str, Any], registry: ArgRegistry) -> ServedModel:
    """Every vLLM run in the container's command and where each names its model."""
    env = _literal_env(container)
    command = [_kube_expand(str(x), env) for x in as_list(container.get("command"), "command")]
    args = [_kube_expand(str(x), env) for x in as_list(container.get("args"), "args")]
    if not command:
        return ServedModel((_read_invocation(ENTRYPOINT, args, positional=True, registry=registry),))
    tokens = command + args
    if _is_shell(tokens):
        commands = _simple_commands(tokens[2])
        if commands is None:
            return ServedModel((), "its sh -c script does not parse (unbalanced quotes)")
        params = tokens[4:]  # "$@": the arguments after $0
        found: list[Invocation] = []
        for words in commands:
            inv = _invocation(words)
            if inv is None:
                continue
            program, inv_args, positional = inv
            expanded: list[str] = []
            for word in inv_args:
                expanded.extend(params if word in ("$@", "$*") else [_shell_expand(word, env)])
            found.append(_read_invocation(program, expanded, positional=positional, registry=registry))
        if not found:
            return ServedModel((), "its sh -c script runs no `vllm serve`")
        return ServedModel(tuple(found))
    inv = _invocation(tokens)
    if inv is None:
        return ServedModel((), f"its command ({' '.join(command)[:60]}) is not `vllm serve`")
    program, inv_args, positional = inv
    return ServedModel((_read_invocation(program, inv_args, positional=positional, registry=registry),))


def model_findings(
    container: Mapping[str, Any],
    recipe: Recipe,
    *,
    where: str,
    declared_on_template: str | None,
    declared_elsewhere: str | None,
    registry: ArgRegistry,
) -> list[Finding]:
    """The served model must be the recipe's: every place the command names a model names it (a
    Hugging Face id, case-insensitive), or the pod template declares with SERVED_MODEL_ANNOTATION
    that what it names (a path, a bucket, a mirror) is the recipe's model. A vLLM run that names no
    model serves vLLM's default: refused whatever the annotation says. --served-model-name is only
    the name clients use; it says nothing about the weights and is not consulted."""
    expected, rid = recipe.huggingface_id, recipe.recipe_id
    declared = (declared_on_template or "").strip() or None
    if declared is not None and not same_model(declared, expected):
        return [
            Finding(
                "MODEL_MISMATCH",
                f"{where}: annotation {SERVED_MODEL_ANNOTATION} declares {declared}, but recipe {rid} is for {expected}",
                f"serve {expected} (and declare it), or use a recipe for {declared}",
            )
        ]
    declare = f"annotate the pod template with {SERVED_MODEL_ANNOTATION}: {expected}"
    if declared_elsewhere and declared is None:
        declare = (
            f"move the annotation {SERVED_MODEL_ANNOTATION} from the object's metadata to the pod template's "
            "(the Pods carry only the template's)"
        )
    served = served_model(container, registry)
    if served.unreadable:
        if declared is not None:
            return []
        return [
            Finding(
                "MODEL_UNVERIFIED",
                f"{where}: {served.unreadable}, so the model it serves cannot be read; recipe {rid} is for {expected}",
                f"run `vllm serve {expected}`, or {declare} if the container loads {expected} another way",
            )
        ]
    out: list[Finding] = []
    for inv in served.invocations:
        for ref in inv.refs:
            if ref.dynamic:
                if declared is None:
                    out.append(
                        Finding(
                            "MODEL_UNVERIFIED",
                            f"{where} takes the model from {ref.value} ({ref.written} to {inv.program}), which is "
                            f"not a literal value of the container's env; recipe {rid} is for {expected}",
                            f"give the model literally ({expected}), or {declare}",
                        )
                    )
            elif not same_model(ref.value, expected) and declared is None:
                fix = (
                    f"serve {expected}, or use a recipe for {ref.value} (if it is a mirror of {expected}: {declare})"
                    if HUB_ID.match(ref.value)
                    else f"serve {expected}; if {ref.value} holds {expected}'s weights, {declare}"
                )
                out.append(
                    Finding(
                        "MODEL_MISMATCH",
                        f"{where} serves {ref.value} ({ref.written} to {inv.program}), but recipe {rid} is for {expected}",
                        fix,
                    )
                )
        if inv.refs:
            continue
        if inv.config_file:
            if declared is None:
                out.append(
                    Finding(
                        "MODEL_UNVERIFIED",
                        f"{where}: {inv.program} names no model but reads a --config file, which may name one and "
                        f"which the webhook cannot read; recipe {rid} is for {expected}",
                        f"give the model on the command line (`vllm serve {expected} --config ...`), or {declare}",
                    )
                )
        elif inv.program == ENTRYPOINT:
            if declared is None:
                out.append(
                    Finding(
                        "MODEL_MISSING",
                        f"{where} sets no command and its args name no model: the image's entrypoint (`vllm serve` in "
                        f"vLLM's images) would serve vLLM's default model ({VLLM_DEFAULT_MODEL}), not {expected} "
                        f"of recipe {rid}",
                        f"add --model {expected} to the args, or {declare} if the image's entrypoint names it",
                    )
                )
        else:
            ignored = (
                f" (it ignores the positional {inv.ignored_positional}: that module reads only --model)"
                if inv.ignored_positional
                else ""
            )
            out.append(
                Finding(
                    "MODEL_MISSING",
                    f"{where}: {inv.program} names no model{ignored}, so vLLM serves its default "
                    f"({VLLM_DEFAULT_MODEL}), not {expected} of recipe {rid}",
                    f"pass the model: `vllm serve {expected}` or --model {expected}",
                )
            )
    return out
