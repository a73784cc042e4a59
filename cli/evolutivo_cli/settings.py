"""Connection settings: flags, then the environment, then the config file, then the local stack.

    ~/.config/evolutivo/config.toml   ($XDG_CONFIG_HOME/evolutivo/config.toml, or EVOLUTIVO_CONFIG)

        token = "..."
        tls = true
        ca_file = "/etc/evolutivo/ca.pem"
        timeout = 10
        [addresses]
        customer = "customer.evolutivo.example:443"
        billing = "billing.evolutivo.example:443"

Environment: EVOLUTIVO_<SVC>_ADDRESS (EVOLUTIVO_ERP_GATEWAY_ADDRESS...), EVOLUTIVO_TOKEN,
EVOLUTIVO_TOKEN_FILE, EVOLUTIVO_TLS (1/true), EVOLUTIVO_CA_FILE, EVOLUTIVO_CERT_FILE,
EVOLUTIVO_KEY_FILE, EVOLUTIVO_TIMEOUT. With nothing set, the local stack of `make up`
(127.0.0.1:50051-50055) is used, with the development credentials it keeps in its data folder
(EVOLUTIVO_DATA_DIR, else ./.data, else the repository's .data): `security/ca.pem`, the client
certificate `security/client.pem` + `client-key.pem` (mutual TLS) and the token `security/dev-token`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

#: The five services in the local stack's port order (deploy/local/evolutivo_stack).
SERVICES: Final[tuple[str, ...]] = ("customer", "charging", "balance", "billing", "erp_gateway")
LOCAL_BASE_PORT: Final = 50051
DEFAULT_ADDRESSES: Final[dict[str, str]] = {
    service: f"127.0.0.1:{LOCAL_BASE_PORT + index}" for index, service in enumerate(SERVICES)
}
DEFAULT_TIMEOUT: Final = 30.0


class SettingsError(ValueError):
    """A config file or environment value that cannot be used (the message says which)."""


@dataclass(frozen=True)
class Settings:
    addresses: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ADDRESSES))
    token: str = ""
    tls: bool = False
    ca_file: str = ""
    #: Client certificate and key (PEM) for mutual TLS.
    cert_file: str = ""
    key_file: str = ""
    timeout: float = DEFAULT_TIMEOUT
    #: Where each value came from ("flag", "env", "config <path>", "default"), for `evolutivo config`.
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def secure(self) -> bool:
        return self.tls or bool(self.ca_file) or bool(self.cert_file)


def env_name(service: str) -> str:
    return f"EVOLUTIVO_{service.upper()}_ADDRESS"


def local_security_dir(env: Mapping[str, str]) -> Path | None:
    """The local stack's development credentials folder (deploy/local/evolutivo_stack/devsecurity.py),
    when there is one: under EVOLUTIVO_DATA_DIR when set (the variable `make up` reads too), else
    ./.data or the repository's .data."""
    if env.get("EVOLUTIVO_DATA_DIR"):
        candidates = [Path(env["EVOLUTIVO_DATA_DIR"]).expanduser()]
    else:
        candidates = [Path(".data"), Path(__file__).resolve().parents[2] / ".data"]
    for data_dir in candidates:
        if (data_dir / "security" / "ca.pem").is_file():
            return (data_dir / "security").resolve()
    return None


def config_path(env: Mapping[str, str]) -> Path:
    if env.get("EVOLUTIVO_CONFIG"):
        return Path(env["EVOLUTIVO_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]).expanduser() if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "evolutivo" / "config.toml"


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise SettingsError(f"{where}: expected true or false, not {value!r}")


def _timeout(value: Any, where: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: expected a number of seconds, not {value!r}") from None
    if seconds <= 0:
        raise SettingsError(f"{where}: must be greater than 0")
    return seconds


def read_config(path: Path) -> dict[str, Any]:
    """The config file's table, or {} when there is none."""
    if not path.exists():
        return {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"addresses", "token", "token_file", "tls", "ca_file", "cert_file", "key_file", "timeout"}
    if unknown:
        raise SettingsError(f"{path}: unknown setting(s) {sorted(unknown)}")
    addresses = data.get("addresses", {})
    if not isinstance(addresses, dict) or set(addresses) - set(SERVICES):
        raise SettingsError(f"{path}: [addresses] takes only {', '.join(SERVICES)}")
    return data


def resolve(
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config: Path | None = None,
) -> Settings:
    """Settings from flags (highest), the environment, the config file, then the defaults.

    ``flags`` holds only what was given: ``addresses`` (service -> address), ``token``, ``tls``,
    ``ca_file``, ``timeout``. ``config`` is the file to read (default: :func:`config_path`).
    """
    flags = dict(flags or {})
    env = os.environ if env is None else env
    path = config if config is not None else config_path(env)
    file = read_config(path)
    where = f"config {path}"

    addresses = dict(DEFAULT_ADDRESSES)
    sources = {service: "default" for service in SERVICES}
    for service, address in file.get("addresses", {}).items():
        addresses[service], sources[service] = str(address), where
    for service in SERVICES:
        if env.get(env_name(service)):
            addresses[service], sources[service] = env[env_name(service)], "env"
    for service, address in (flags.get("addresses") or {}).items():
        if address:
            addresses[service], sources[service] = address, "flag"

    def pick(name: str, env_var: str, default: Any) -> tuple[Any, str]:
        if flags.get(name) not in (None, ""):
            return flags[name], "flag"
        if env.get(env_var, "") != "":
            return env[env_var], "env"
        if name in file:
            return file[name], where
        return default, "default"

    token, sources["token"] = pick("token", "EVOLUTIVO_TOKEN", "")
    token_file, token_file_source = pick("token_file", "EVOLUTIVO_TOKEN_FILE", "")
    tls, sources["tls"] = pick("tls", "EVOLUTIVO_TLS", None)
    ca_file, sources["ca_file"] = pick("ca_file", "EVOLUTIVO_CA_FILE", "")
    cert_file, sources["cert_file"] = pick("cert_file", "EVOLUTIVO_CERT_FILE", "")
    key_file, sources["key_file"] = pick("key_file", "EVOLUTIVO_KEY_FILE", "")
    timeout, sources["timeout"] = pick("timeout", "EVOLUTIVO_TIMEOUT", DEFAULT_TIMEOUT)
    use_tls = None if tls is None else _bool(tls, f"tls ({sources['tls']})")

    # The local stack's development credentials fill in what was not configured: the token, and
    # the TLS files unless TLS was turned off or other files were given.
    local = local_security_dir(env)
    if local is not None:
        where_local = f"local stack {local}"
        if not token and not token_file and (local / "dev-token").is_file():
            token_file, token_file_source = str(local / "dev-token"), where_local
        if use_tls is not False and not ca_file and not cert_file and not key_file:
            use_tls, sources["tls"] = True, where_local
            ca_file, sources["ca_file"] = str(local / "ca.pem"), where_local
            if (local / "client.pem").is_file() and (local / "client-key.pem").is_file():
                cert_file, sources["cert_file"] = str(local / "client.pem"), where_local
                key_file, sources["key_file"] = str(local / "client-key.pem"), where_local
    if not token and token_file:
        try:
            token = Path(str(token_file)).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"token file {token_file!r} ({token_file_source}): {exc.strerror}") from None
        sources["token"] = f"{token_file_source} (file {token_file})"
    files = {"ca_file": str(ca_file), "cert_file": str(cert_file), "key_file": str(key_file)}
    for name, value in files.items():
        if value and not Path(value).expanduser().is_file():
            raise SettingsError(f"{name.replace('_', ' ')} {value!r} ({sources[name]}) does not exist")
    if bool(files["cert_file"]) != bool(files["key_file"]):
        raise SettingsError("a client certificate needs both cert_file and key_file")
    return Settings(
        addresses=addresses,
        token=str(token),
        tls=bool(use_tls),
        ca_file=str(Path(files["ca_file"]).expanduser()) if files["ca_file"] else "",
        cert_file=str(Path(files["cert_file"]).expanduser()) if files["cert_file"] else "",
        key_file=str(Path(files["key_file"]).expanduser()) if files["key_file"] else "",
        timeout=_timeout(timeout, f"timeout ({sources['timeout']})"),
        sources=sources,
    )
