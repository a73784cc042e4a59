"""services/*/Dockerfile: built with the project's own install script, non-root, ports declared.

No Docker engine is needed: the Dockerfiles are read, and the install command they run is the one
`make setup` runs (scripts/install_packages.sh), so every CI run exercises it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVICES = {"customer": 50051, "charging": 50052, "balance": 50053, "billing": 50054, "erp_gateway": 50055}
INSTALL = "scripts/install_packages.sh"


def _instructions(service: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "services" / service / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def _args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    pairs = [shlex.split(a)[0].partition("=") for i, a in instructions if i == "ARG" and "=" in a]
    return {name: value for name, _, value in pairs}


def _env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, rest in instructions:
        if instruction == "ENV":
            env.update((name, value) for name, _, value in (item.partition("=") for item in shlex.split(rest)))
    return env


def test_every_service_has_a_dockerfile() -> None:
    found = {p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml")}
    assert found == set(SERVICES)
    assert all((ROOT / "services" / s / "Dockerfile").is_file() for s in found)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_multi_stage_on_a_pinned_slim_python(service: str) -> None:
    instructions = _instructions(service)
    args = _args(instructions)
    bases = [args.get(rest.split()[0].strip("${}"), rest.split()[0]) for i, rest in instructions if i == "FROM"]
    assert len(bases) == 2, bases
    assert len(set(bases)) == 1, "build and runtime stages must share the base (the venv links its python)"
    base = bases[0]
    # An exact patch version and a slim variant, or a digest.
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_installs_only_its_service_with_the_shared_script(service: str) -> None:
    runs = [rest for i, rest in _instructions(service) if i == "RUN"]
    installs = [r for r in runs if INSTALL in r]
    assert len(installs) == 1, runs
    command = shlex.split(installs[0].split("&&")[-1])
    assert command == ["bash", INSTALL, "/opt/venv/bin/python", "gen/python", "libs/runtime", f"services/{service}"]
    assert not [r for r in runs if "pip install" in r], "pip runs only through the shared install script"
    copies = [rest for i, rest in _instructions(service) if i == "COPY" and "--from" not in rest]
    sources = {c.split()[0] for c in copies}
    assert sources == {INSTALL, "gen/python", "libs/runtime", f"services/{service}"}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_runs_as_non_root_with_both_ports_and_sigterm(service: str) -> None:
    instructions = _instructions(service)
    users = [rest for i, rest in instructions if i == "USER"]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid, so runAsNonRoot can verify it"
    port = SERVICES[service]
    exposed = {p for i, rest in instructions if i == "EXPOSE" for p in rest.split()}
    assert exposed == {str(port), "9464"}
    env = _env(instructions)
    prefix = service.upper() + "_"
    assert env[f"{prefix}GRPC_PORT"] == str(port)
    assert env[f"{prefix}METRICS_PORT"] == "9464"
    assert env[f"{prefix}GRPC_HOST"] == "0.0.0.0"
    # A read-only root filesystem: Python must not try to write bytecode.
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert ("STOPSIGNAL", "SIGTERM") in instructions
    entrypoint = [rest for i, rest in instructions if i == "ENTRYPOINT"]
    assert entrypoint == [f'["python", "-m", "evolutivo_{service}"]'], "exec form: Python is PID 1 and gets SIGTERM"


def test_setup_installs_through_the_same_script() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    calls = [line for line in setup.splitlines() if INSTALL in line and not line.lstrip().startswith("#")]
    assert any("--editable" in line for line in calls), calls
    # No other pip call installs the project's own packages.
    pip_lines = [line for line in setup.splitlines() if "pip install" in line and not line.lstrip().startswith("#")]
    assert not [line for line in pip_lines if "${packages" in line or "libs/runtime" in line or " -e " in line]


def test_docker_context_leaves_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "node_modules", "**/*.egg-info"} <= set(ignored)
