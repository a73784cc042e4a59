"""evolutivo_cli.settings: flags over the environment over the config file over the local stack."""

from __future__ import annotations

from pathlib import Path

import pytest
from evolutivo_cli.app import app
from evolutivo_cli.settings import DEFAULT_ADDRESSES, SettingsError, config_path, resolve
from typer.testing import CliRunner


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_with_nothing_set_the_local_stack_is_used(tmp_path: Path) -> None:
    settings = resolve(env={"EVOLUTIVO_DATA_DIR": str(tmp_path)}, config=tmp_path / "missing.toml")
    assert settings.addresses == {
        "customer": "127.0.0.1:50051",
        "charging": "127.0.0.1:50052",
        "balance": "127.0.0.1:50053",
        "billing": "127.0.0.1:50054",
        "erp_gateway": "127.0.0.1:50055",
    }
    assert (settings.token, settings.secure, settings.timeout) == ("", False, 30.0)
    assert set(settings.sources.values()) == {"default"}


def test_flags_beat_the_environment_which_beats_the_config_file(tmp_path: Path) -> None:
    ca = write(tmp_path / "ca.pem", "-----BEGIN CERTIFICATE-----\n")
    config = write(
        tmp_path / "config.toml",
        'token = "from-file"\ntimeout = 7\n[addresses]\ncustomer = "file:1"\nbilling = "file:4"\nbalance = "file:3"\n',
    )
    env = {
        "EVOLUTIVO_BILLING_ADDRESS": "env:4",
        "EVOLUTIVO_BALANCE_ADDRESS": "env:3",
        "EVOLUTIVO_TOKEN": "from-env",
        "EVOLUTIVO_DATA_DIR": str(tmp_path),
    }
    flags = {"addresses": {"balance": "flag:3"}, "ca_file": str(ca)}

    settings = resolve(flags=flags, env=env, config=config)

    assert settings.addresses["customer"] == "file:1"
    assert settings.addresses["billing"] == "env:4"
    assert settings.addresses["balance"] == "flag:3"
    assert settings.addresses["charging"] == DEFAULT_ADDRESSES["charging"]
    assert settings.token == "from-env"
    assert settings.timeout == 7.0
    assert settings.secure and settings.ca_file == str(ca)
    assert settings.sources["customer"].startswith("config ")
    assert (settings.sources["billing"], settings.sources["balance"], settings.sources["token"]) == (
        "env",
        "flag",
        "env",
    )


def test_env_tls_and_timeout_are_parsed(tmp_path: Path) -> None:
    env = {"EVOLUTIVO_TLS": "true", "EVOLUTIVO_TIMEOUT": "2.5", "EVOLUTIVO_DATA_DIR": str(tmp_path)}
    settings = resolve(env=env, config=tmp_path / "none.toml")
    assert settings.secure and settings.timeout == 2.5


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("tokn = 'x'\n", {}, "unknown setting"),
        ("[addresses]\nbilling_x = 'a:1'\n", {}, "[addresses] takes only"),
        ("token = \n", {}, "not valid TOML"),
        ("", {"EVOLUTIVO_TLS": "maybe"}, "expected true or false"),
        ("", {"EVOLUTIVO_TIMEOUT": "-1"}, "greater than 0"),
        ("", {"EVOLUTIVO_CA_FILE": "/no/such/ca.pem"}, "does not exist"),
    ],
)
def test_unusable_settings_are_refused_with_where_they_come_from(
    tmp_path: Path, content: str, env: dict[str, str], message: str
) -> None:
    config = write(tmp_path / "config.toml", content)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[")):
        resolve(env={"EVOLUTIVO_DATA_DIR": str(tmp_path), **env}, config=config)


def local_stack(data_dir: Path) -> Path:
    """The files `make up` keeps in DATA_DIR/security (deploy/local/evolutivo_stack/devsecurity.py)."""
    security = data_dir / "security"
    security.mkdir(parents=True)
    for name in ("ca.pem", "client.pem", "client-key.pem"):
        write(security / name, "-----BEGIN-----\n")
    write(security / "dev-token", "dev.token.value\n")
    return security


def test_the_local_stacks_development_credentials_are_used_when_nothing_else_is(tmp_path: Path) -> None:
    security = local_stack(tmp_path / "data")
    env = {"EVOLUTIVO_DATA_DIR": str(tmp_path / "data")}
    settings = resolve(env=env, config=tmp_path / "none.toml")
    assert (settings.secure, settings.token) == (True, "dev.token.value")
    assert (settings.ca_file, settings.cert_file, settings.key_file) == (
        str(security / "ca.pem"),
        str(security / "client.pem"),
        str(security / "client-key.pem"),
    )
    assert settings.sources["ca_file"] == f"local stack {security}"

    # A stack run with plaintext transport still wants the token.
    plaintext = resolve(env={**env, "EVOLUTIVO_TLS": "0"}, config=tmp_path / "none.toml")
    assert (plaintext.secure, plaintext.ca_file, plaintext.token) == (False, "", "dev.token.value")

    # Anything configured wins: a token, or TLS files of one's own.
    ca = write(tmp_path / "corp-ca.pem", "-----BEGIN-----\n")
    configured = resolve(flags={"token": "mine", "ca_file": str(ca)}, env=env, config=tmp_path / "none.toml")
    assert (configured.token, configured.ca_file, configured.cert_file) == ("mine", str(ca), "")


def test_a_token_file_is_read_and_a_half_client_certificate_refused(tmp_path: Path) -> None:
    env = {"EVOLUTIVO_DATA_DIR": str(tmp_path), "EVOLUTIVO_TOKEN_FILE": str(write(tmp_path / "t", " abc \n"))}
    assert resolve(env=env, config=tmp_path / "none.toml").token == "abc"
    cert = write(tmp_path / "c.pem", "x")
    with pytest.raises(SettingsError, match="both cert_file and key_file"):
        resolve(flags={"cert_file": str(cert)}, env={"EVOLUTIVO_DATA_DIR": str(tmp_path)}, config=tmp_path / "n")


def test_config_path_follows_evolutivo_config_then_xdg(tmp_path: Path) -> None:
    assert config_path({"EVOLUTIVO_CONFIG": str(tmp_path / "x.toml")}) == tmp_path / "x.toml"
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "evolutivo" / "config.toml"


def test_config_command_shows_the_sources_and_a_bad_file_is_a_usage_error(tmp_path: Path) -> None:
    config = write(tmp_path / "config.toml", '[addresses]\nbilling = "billing.example:443"\n')
    runner = CliRunner()
    shown = runner.invoke(
        app,
        ["--config", str(config), "--customer-address", "flag.example:1", "-o", "json", "config"],
        env={"EVOLUTIVO_BALANCE_ADDRESS": "env.example:3", "EVOLUTIVO_DATA_DIR": str(tmp_path)},
    )
    assert shown.exit_code == 0, shown.output
    import json

    data = json.loads(shown.stdout)
    assert data["addresses"]["billing"] == "billing.example:443"
    assert data["addresses"]["customer"] == "flag.example:1"
    assert data["addresses"]["balance"] == "env.example:3"
    assert data["sources"]["customer"] == "flag"

    broken = write(tmp_path / "broken.toml", "nonsense = [\n")
    refused = runner.invoke(app, ["--config", str(broken), "config"], env={"EVOLUTIVO_DATA_DIR": str(tmp_path)})
    assert refused.exit_code == 1
    assert "not valid TOML" in refused.stderr
