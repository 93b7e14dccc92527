"""aim-webhook's command line: every environment default goes through the parser, so a bad value is
one line naming the variable and exit 2 (it was a traceback while the parser was built), and a
flag given wins over the variable. Cost: milliseconds."""

from __future__ import annotations

import pytest

from aim_webhook.cli import certs, parse_args, reconcile, serve

TLS = ["--tls-cert", "/tls/tls.crt", "--tls-key", "/tls/tls.key"]


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and not any("Traceback" in line for line in err), err
    return err[-1]


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("AIM_WEBHOOK_PORT", "84x3", "argument --port: '84x3' (from $AIM_WEBHOOK_PORT) is not a valid int"),
        ("AIM_WEBHOOK_WORKERS", "two", "argument --workers: 'two' (from $AIM_WEBHOOK_WORKERS) is not a valid int"),
        (
            "AIM_WEBHOOK_SHUTDOWN_DELAY",
            "5s",
            "argument --shutdown-delay: '5s' (from $AIM_WEBHOOK_SHUTDOWN_DELAY) is not a valid float",
        ),
        ("AIM_LOG_LEVEL", "loud", "argument --log-level: 'loud' (from $AIM_LOG_LEVEL) is not a valid value (one of DEBUG, INFO"),
        ("AIM_LOG_FORMAT", "xml", "argument --log-format: 'xml' (from $AIM_LOG_FORMAT) is not a valid value (one of json, text)"),
        ("AIM_WEBHOOK_KUBE", "maybe", "$AIM_WEBHOOK_KUBE='maybe': use true or false"),
        ("AIM_CHECK_RESOURCE_LIMITS", "enabled", "$AIM_CHECK_RESOURCE_LIMITS='enabled': use true or false"),
    ],
)
def test_a_bad_environment_value_is_one_line_naming_it_and_exit_2(
    env: str, value: str, fragment: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(env, value)
    assert fragment in refused(["serve", *TLS], capsys)


def test_a_bad_flag_is_named_as_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(["serve", *TLS, "--port", "x"], capsys)
    assert "argument --port: 'x' is not a valid int" in line and "$" not in line


def test_the_environment_sets_defaults_and_a_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIM_WEBHOOK_WORKERS", "3")
    monkeypatch.setenv("AIM_WEBHOOK_MUTATE", "false")
    monkeypatch.setenv("AIM_CHECK_PERFORMANCE_CONSTRAINTS", "0")
    monkeypatch.setenv("AIM_LOG_LEVEL", "debug")
    monkeypatch.setenv("AIM_WEBHOOK_TLS_CERT", "/env/tls.crt")
    monkeypatch.setenv("AIM_WEBHOOK_TLS_KEY", "/env/tls.key")
    args = parse_args(["serve"])
    assert (args.workers, args.mutate, args.check_performance_constraints, args.log_level) == (3, False, False, "DEBUG")
    assert (args.tls_cert, args.tls_key, args.kube, args.check_resource_limits) == ("/env/tls.crt", "/env/tls.key", True, True)
    args = parse_args(["serve", "--workers", "5", "--mutate", "--tls-cert", "/flag.crt"])
    assert (args.workers, args.mutate, args.tls_cert) == (5, True, "/flag.crt")
    assert not [k for k in vars(args) if k.startswith("_env_")]


def test_the_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in (
        "AIM_WEBHOOK_PORT",
        "AIM_WEBHOOK_WORKERS",
        "AIM_WEBHOOK_KUBE",
        "AIM_WEBHOOK_MUTATE",
        "AIM_LOG_LEVEL",
        "AIM_RECIPES_DIR",
    ):
        monkeypatch.delenv(env, raising=False)
    args = parse_args(["serve", *TLS])
    assert (args.port, args.workers, args.threads, args.kube, args.mutate, args.log_level, args.catalog) == (
        8443,
        2,
        4,
        True,
        True,
        "INFO",
        None,
    )


def test_tls_files_are_required_without_their_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AIM_WEBHOOK_TLS_CERT", raising=False)
    monkeypatch.delenv("AIM_WEBHOOK_TLS_KEY", raising=False)
    assert "the following arguments are required: --tls-cert, --tls-key" in refused(["serve"], capsys)


def test_each_subcommand_runs_its_own_code() -> None:
    assert parse_args(["serve", *TLS]).run is serve
    assert parse_args(["certs", "--namespace", "n", "--service", "s", "--secret", "x"]).run is certs
    assert parse_args(["reconcile", "--namespace", "n"]).run is reconcile
