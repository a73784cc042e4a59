"""deploy/k8s: both overlays render and validate, meet the policy, and the policy catches breakage."""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def _load_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_k8s_check", ROOT / "deploy" / "k8s" / "check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check = _load_check()


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: check.render(path) for name, path in check.OVERLAYS.items()}


@pytest.fixture(scope="module")
def postgres() -> dict[str, list[dict[str, Any]]]:
    return {name: check.render(path) for name, path in check.POSTGRES.items()}


def _find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_validates_against_the_kubernetes_schemas(rendered: dict[str, Any], overlay: str) -> None:
    objs = rendered[overlay]
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "Deployment", "Service", "ServiceAccount", "ConfigMap"} <= kinds
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
    assert check.schema_errors(objs) == []


def test_overlays_meet_the_policy(rendered: dict[str, Any]) -> None:
    assert check.policy_violations(rendered["dev"]) == []
    assert check.policy_violations(rendered["prod"], min_replicas=2, spread=True) == []


def test_dev_runs_one_replica_and_prod_at_least_two(rendered: dict[str, Any]) -> None:
    for name in check.SERVICES:
        dev = _find(rendered["dev"], "HorizontalPodAutoscaler", name)["spec"]
        prod = _find(rendered["prod"], "HorizontalPodAutoscaler", name)["spec"]
        assert (dev["minReplicas"], dev["maxReplicas"]) == (1, 1)
        assert prod["minReplicas"] >= 2 and prod["maxReplicas"] > prod["minReplicas"]
    # Dev has no spreading rules; the policy for prod notices that.
    assert any("podAntiAffinity" in p for p in check.policy_violations(rendered["dev"], spread=True))


def test_database_url_is_a_secret_reference_and_no_secret_is_rendered(rendered: dict[str, Any]) -> None:
    for overlay, objs in rendered.items():
        assert not [o for o in objs if o["kind"] == "Secret"], overlay
        for name, (prefix, _) in check.SERVICES.items():
            spec = _find(objs, "Deployment", name)["spec"]["template"]["spec"]
            for container in spec["containers"] + spec["initContainers"]:
                env = {e["name"]: e for e in container["env"]}
                ref = env[f"{prefix}DATABASE_URL"]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": f"pg-{name}-app", "key": "uri"}


def test_prod_speaks_tls_to_nats_and_verifies_postgres(rendered: dict[str, Any]) -> None:
    for name, (prefix, _) in check.SERVICES.items():
        config = check._config(rendered["prod"], f"{name}-config")
        assert config[f"{prefix}NATS_URL"].startswith("tls://")
        container = _find(rendered["prod"], "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PGSSLMODE"] == "verify-full"
        assert check._config(rendered["dev"], f"{name}-config")[f"{prefix}NATS_URL"].startswith("nats://")


def test_engines_postgres_and_nats(postgres: dict[str, Any]) -> None:
    values = yaml.safe_load(check.NATS_VALUES.read_text())
    assert check.schema_errors(postgres["base"]) == []
    assert check.engine_violations(postgres["base"], production=True, nats_values=values) == []
    assert check.engine_violations(postgres["dev"], production=False) == []
    # The dev variant is not production-grade, and the check says so.
    assert any("fewer than 3 instances" in p for p in check.engine_violations(postgres["dev"], production=True))
    broken = copy.deepcopy(values)
    broken["config"]["cluster"]["replicas"] = 1
    assert check.engine_violations(postgres["base"], production=True, nats_values=broken) == [
        "NATS values: config.cluster must be enabled with 3 replicas"
    ]


def test_check_all_passes() -> None:
    assert check.check_all() == []


# --- the policy catches a deliberately broken manifest --------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _main(d: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = d["spec"]["template"]["spec"]["containers"][0]
    return container


def _drop_limits(d: dict[str, Any]) -> None:
    del _main(d)["resources"]["limits"]


def _drop_liveness(d: dict[str, Any]) -> None:
    del _main(d)["livenessProbe"]


def _drop_readiness(d: dict[str, Any]) -> None:
    del _main(d)["readinessProbe"]


def _run_as_root(d: dict[str, Any]) -> None:
    _main(d)["securityContext"]["runAsNonRoot"] = False


def _writable_root(d: dict[str, Any]) -> None:
    del _main(d)["securityContext"]["readOnlyRootFilesystem"]


def _escalation(d: dict[str, Any]) -> None:
    _main(d)["securityContext"]["allowPrivilegeEscalation"] = True


def _keep_capabilities(d: dict[str, Any]) -> None:
    del _main(d)["securityContext"]["capabilities"]


def _init_without_limits(d: dict[str, Any]) -> None:
    del d["spec"]["template"]["spec"]["initContainers"][0]["resources"]["limits"]


def _latest_image(d: dict[str, Any]) -> None:
    _main(d)["image"] = "evolutivo/customer:latest"


def _short_grace(d: dict[str, Any]) -> None:
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10


def _http_probe(d: dict[str, Any]) -> None:
    _main(d)["readinessProbe"] = {"tcpSocket": {"port": 50051}}


def _no_migration(d: dict[str, Any]) -> None:
    d["spec"]["template"]["spec"]["initContainers"][0]["args"] = ["serve"]


def _probe_on_tls_port(d: dict[str, Any]) -> None:
    _main(d)["livenessProbe"]["grpc"]["port"] = 50051


def _writable_secret_mount(d: dict[str, Any]) -> None:
    auth = next(m for m in _main(d)["volumeMounts"] if m["name"] == "auth")
    auth["readOnly"] = False


def _mount_without_volume(d: dict[str, Any]) -> None:
    spec = d["spec"]["template"]["spec"]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "auth"]


BROKEN: dict[str, tuple[Mutation, str]] = {
    "no limits": (_drop_limits, "customer: no cpu in resources.limits"),
    "no liveness probe": (_drop_liveness, "customer: no livenessProbe"),
    "no readiness probe": (_drop_readiness, "customer: no readinessProbe"),
    "runs as root": (_run_as_root, "customer: runAsNonRoot must be true"),
    "writable root": (_writable_root, "customer: readOnlyRootFilesystem must be true"),
    "privilege escalation": (_escalation, "customer: allowPrivilegeEscalation must be false"),
    "capabilities kept": (_keep_capabilities, "customer: capabilities.drop must include ALL"),
    "init container without limits": (_init_without_limits, "migrate: no memory in resources.limits"),
    "moving image tag": (_latest_image, "needs a fixed tag or digest"),
    "grace shorter than the drain": (_short_grace, "terminationGracePeriodSeconds must be at least"),
    "probe not on gRPC health": (_http_probe, "readinessProbe must be a gRPC health probe on CUSTOMER_HEALTH_PORT"),
    "no migration": (_no_migration, "no initContainer running `migrate`"),
    "probe on the TLS port": (_probe_on_tls_port, "livenessProbe is on the gRPC port 50051"),
    "secret mounted writable": (
        _writable_secret_mount,
        "CUSTOMER_AUTH_JWKS_FILE=/etc/evolutivo/auth/jwks.json is not under a read-only volumeMount",
    ),
    "mount without its volume": (_mount_without_volume, "mounts 'auth', which is no volume"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_policy_catches_a_broken_deployment(rendered: dict[str, Any], case: str) -> None:
    mutate, expected = BROKEN[case]
    objs = copy.deepcopy(rendered["dev"])
    mutate(_find(objs, "Deployment", "customer"))
    problems = check.policy_violations(objs)
    assert any(expected in p for p in problems), problems
    # Only the broken Deployment is reported.
    assert all("customer" in p for p in problems), problems


@pytest.mark.parametrize("kind", ["PodDisruptionBudget", "HorizontalPodAutoscaler", "Service", "ServiceAccount"])
def test_policy_catches_a_missing_companion(rendered: dict[str, Any], kind: str) -> None:
    objs = [o for o in rendered["dev"] if not (o["kind"] == kind and o["metadata"]["name"] == "billing")]
    assert any("billing" in p for p in check.policy_violations(objs))


def test_policy_catches_a_network_policy_that_opens_a_call(rendered: dict[str, Any]) -> None:
    objs = copy.deepcopy(rendered["dev"])
    policy = _find(objs, "NetworkPolicy", "charging")
    # charging calls no service: an egress rule to balance is a hole.
    policy["spec"]["egress"].append(
        {
            "to": [
                {
                    "podSelector": {
                        "matchLabels": {"app.kubernetes.io/name": "balance", "app.kubernetes.io/part-of": "evolutivo"}
                    }
                }
            ],
            "ports": [{"port": 50053, "protocol": "TCP"}],
        }
    )
    problems = check.policy_violations(objs)
    assert problems == [
        "NetworkPolicy/charging: egress to ['balance', 'dns', 'nats', 'pg-charging'], "
        "expected ['dns', 'nats', 'pg-charging']"
    ]


def test_policy_catches_a_missing_default_deny(rendered: dict[str, Any]) -> None:
    objs = [o for o in rendered["dev"] if o["metadata"]["name"] != "default-deny"]
    assert check.policy_violations(objs) == [
        "no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)"
    ]


# A plain Deployment as one is often first written: no limits, no probes, root, writable root.
NAIVE = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
spec:
  selector:
    matchLabels: {app: worker}
  template:
    metadata:
      labels: {app: worker}
    spec:
      containers:
        - name: worker
          image: evolutivo/worker
"""


def test_policy_rejects_a_naive_deployment() -> None:
    problems = check.container_violations(check.load_yaml(NAIVE)[0])
    for expected in (
        "no cpu in resources.limits",
        "no memory in resources.limits",
        "no livenessProbe",
        "no readinessProbe",
        "runAsNonRoot must be true",
        "readOnlyRootFilesystem must be true",
        "needs a fixed tag or digest",
        "automountServiceAccountToken must be false",
    ):
        assert any(expected in p for p in problems), (expected, problems)


def test_schema_validation_rejects_unknown_fields_and_wrong_types(rendered: dict[str, Any]) -> None:
    objs = copy.deepcopy(rendered["dev"])
    deployment = _find(objs, "Deployment", "customer")
    _main(deployment)["livenessProbes"] = _main(deployment).pop("livenessProbe")  # a typo
    hpa = _find(objs, "HorizontalPodAutoscaler", "customer")
    hpa["spec"]["minReplicas"] = "one"
    errors = check.schema_errors([deployment, hpa], versions=["1.30.0"])
    assert len(errors) == 2, errors
    assert "livenessProbes" in errors[0]
    assert "HorizontalPodAutoscaler/customer" in errors[1] and "minReplicas" in errors[1]


# --- security (docs/security.md): mutual TLS, tokens, the plaintext health port --------------------


def test_probes_use_the_plaintext_health_port_and_no_policy_opens_it(rendered: dict[str, Any]) -> None:
    for overlay, objs in rendered.items():
        for name, (prefix, port) in check.SERVICES.items():
            health = int(check._config(objs, f"{name}-config")[f"{prefix}HEALTH_PORT"])
            assert health not in (0, port), overlay
            main = _main(_find(objs, "Deployment", name))
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert main[probe]["grpc"]["port"] == health, (overlay, name, probe)
            service = _find(objs, "Service", name)
            assert health not in {p["port"] for p in service["spec"]["ports"]}, "the health port is not published"


def test_policy_catches_a_missing_health_port(rendered: dict[str, Any]) -> None:
    objs = copy.deepcopy(rendered["dev"])
    next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("customer-config"))[
        "data"
    ].pop("CUSTOMER_HEALTH_PORT")
    problems = check.policy_violations(objs)
    assert "Deployment/customer: CUSTOMER_HEALTH_PORT must be set apart from 50051 and 9464" in problems
    assert all("customer" in p for p in problems), problems


def test_policy_catches_a_network_policy_that_opens_the_health_port(rendered: dict[str, Any]) -> None:
    objs = copy.deepcopy(rendered["dev"])
    policy = _find(objs, "NetworkPolicy", "balance")
    policy["spec"]["ingress"][0]["ports"].append({"port": 8081, "protocol": "TCP"})
    assert check.policy_violations(objs) == [
        "NetworkPolicy/balance: ingress opens ports ['50053', '8081', '9464'], expected only 50053 and 9464 "
        "(the kubelet reaches the health port from the pod's node without a rule)"
    ]


def test_prod_serves_mutual_tls_and_dev_is_refused_as_prod(rendered: dict[str, Any]) -> None:
    for name, (prefix, _) in check.SERVICES.items():
        prod = check._config(rendered["prod"], f"{name}-config")
        assert prod[f"{prefix}TRANSPORT"] == "tls"
        assert prod[f"{prefix}TLS_REQUIRE_CLIENT_CERT"] == "true"
        assert "evolutivo" in prod[f"{prefix}AUTH_ISSUERS"].split(","), "the services' own tokens"
        assert check._config(rendered["dev"], f"{name}-config")[f"{prefix}TRANSPORT"] == "plaintext"
    problems = check.policy_violations(rendered["dev"], require_tls=True)
    assert sorted(problems) == sorted(
        f"Deployment/{name}: {prefix}TRANSPORT must be tls" for name, (prefix, _) in check.SERVICES.items()
    )
    # Without its certificate volume prod breaks the file policy (dev drops it because it runs plaintext).
    objs = copy.deepcopy(rendered["prod"])
    main = _main(_find(objs, "Deployment", "billing"))
    main["volumeMounts"] = [m for m in main["volumeMounts"] if m["name"] != "tls"]
    problems = check.policy_violations(objs, min_replicas=2, spread=True, require_tls=True)
    assert problems == [
        f"Deployment/billing: BILLING_TLS_{f}_FILE=/etc/evolutivo/tls/{path} is not under a read-only volumeMount"
        for f, path in (("CA", "ca.crt"), ("CERT", "tls.crt"), ("KEY", "tls.key"))
    ]


def test_prod_certificates_match_the_mounted_secrets(rendered: dict[str, Any]) -> None:
    certificates = {o["spec"]["secretName"]: o["spec"] for o in rendered["prod"] if o["kind"] == "Certificate"}
    for name in check.SERVICES:
        spec = _find(rendered["prod"], "Deployment", name)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        secret = volumes["tls"]["secret"]["secretName"]
        certificate = certificates[secret]
        assert name in certificate["dnsNames"], "callers dial <service>:<port>"
        assert set(certificate["usages"]) == {"server auth", "client auth"}, "server and client of mutual TLS"
        assert certificate["issuerRef"] == {"name": "evolutivo-ca", "kind": "Issuer"}
        sources = [s["secret"]["name"] for s in volumes["auth"]["projected"]["sources"]]
        assert sources == ["evolutivo-jwks", f"{name}-signing-key"]


def test_secrets_are_references(rendered: dict[str, Any]) -> None:
    for overlay, objs in rendered.items():
        main = _main(_find(objs, "Deployment", "erp-gateway"))
        env = {e["name"]: e for e in main["env"]}
        assert env["ERP_GATEWAY_CREDENTIAL_KEYS"]["valueFrom"]["secretKeyRef"] == {
            "name": "erp-gateway-credential-keys",
            "key": "keys",
        }, overlay
        spec = _find(objs, "Deployment", "customer")["spec"]["template"]["spec"]
        for container in spec["containers"] + spec["initContainers"]:  # migration 0004 encrypts too
            env = {e["name"]: e for e in container["env"]}
            assert env["CUSTOMER_PAYMENT_DETAILS_KEYS"]["valueFrom"]["secretKeyRef"] == {
                "name": "customer-payment-details-keys",
                "key": "keys",
            }, overlay
        for name in check.SERVICES:
            config = check._config(objs, f"{name}-config")
            # Only paths in the ConfigMap, never key material.
            assert not [v for v in config.values() if "BEGIN" in v or '"keys"' in v], (overlay, name)


# Alerting rules (deploy/k8s/monitoring).


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    rendered: list[dict[str, Any]] = check.render(check.MONITORING)
    return rendered


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    found: dict[str, Any] = check.suite_metrics()
    return found


def test_the_shipped_alerts_name_the_services_metrics(alerts: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
    (rule,) = [o for o in alerts if o["kind"] == "PrometheusRule"]
    assert rule["metadata"]["namespace"] == "evolutivo"
    assert check.alert_violations(alerts, metrics) == []
    names = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    # What must page someone: events not moving, events given up on, server errors, bills not issued.
    severities = {r["alert"]: r["labels"]["severity"] for g in rule["spec"]["groups"] for r in g["rules"]}
    for paging in (
        "EvolutivoOutboxBacklog",
        "EvolutivoDeadLetters",
        "EvolutivoServerErrors",
        "EvolutivoCycleCloseFailing",
    ):
        assert severities[paging] == "page"
    assert len(names) == len(set(names)) >= 15


def _rules(objs: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = next(o for o in objs if o["kind"] == "PrometheusRule")
    return found


def _first_rule(objs: list[dict[str, Any]]) -> dict[str, Any]:
    rule: dict[str, Any] = _rules(objs)["spec"]["groups"][0]["rules"][0]
    return rule


ALERT_BREAKAGES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("an unknown metric", lambda r: r.update(expr="evolutivo_outbox_backlogg > 1000"), "no metric the services expose"),
    ("a counter's bare name", lambda r: r.update(expr="rate(grpc_server_handled[5m]) > 1"), "no metric"),
    ("a label the metric lacks", lambda r: r.update(expr='evolutivo_consumer_pending{durable="x"} > 1'), "no label"),
    (
        "a gRPC code as the docs once spelt it",
        lambda r: r.update(expr='rate(grpc_server_handled_total{grpc_code=~"Internal|Unknown"}[5m]) > 0'),
        "is never '",
    ),
    ("a job state that does not exist", lambda r: r.update(expr='evolutivo_erp_sync_jobs{state="done"} > 0'), "never"),
    (
        "an aggregation by a missing label",
        lambda r: r.update(expr="sum by (consumer) (evolutivo_outbox_backlog) > 1"),
        "by",
    ),
    ("an expression that does not parse", lambda r: r.update(expr="rate(evolutivo_outbox_published_total[5m"), "parse"),
    ("no severity", lambda r: r["labels"].pop("severity"), "severity"),
    ("an unknown severity", lambda r: r["labels"].update(severity="urgent"), "severity"),
    ("no summary", lambda r: r["annotations"].pop("summary"), "summary"),
    ("no description", lambda r: r["annotations"].update(description=" "), "description"),
    ("a for that is no duration", lambda r: r.update({"for": "five minutes"}), "duration"),
    ("a name not in CamelCase", lambda r: r.update(alert="outbox_backlog"), "CamelCase"),
]


@pytest.mark.parametrize(("what", "breaks", "expected"), ALERT_BREAKAGES, ids=[b[0] for b in ALERT_BREAKAGES])
def test_the_alert_check_catches(
    alerts: list[dict[str, Any]],
    metrics: dict[str, Any],
    what: str,
    breaks: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    broken = copy.deepcopy(alerts)
    breaks(_first_rule(broken))
    problems = check.alert_violations(broken, metrics)
    assert problems and all(expected in p for p in problems), (what, problems)


def test_the_alert_check_catches_a_name_used_twice(alerts: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
    broken = copy.deepcopy(alerts)
    group = _rules(broken)["spec"]["groups"][0]
    group["rules"].append(copy.deepcopy(group["rules"][0]))
    assert [p for p in check.alert_violations(broken, metrics) if "used twice" in p]
    assert check.alert_violations([], metrics) == ["no PrometheusRule"]


def test_the_pod_monitor_scrapes_every_service(alerts: list[dict[str, Any]], rendered: dict[str, Any]) -> None:
    assert check.scrape_violations(alerts, rendered["prod"]) == []
    assert check.scrape_violations([o for o in alerts if o["kind"] != "PodMonitor"], rendered["prod"]) == [
        "no PodMonitor: nothing scrapes the services"
    ]
    wrong_port = copy.deepcopy(alerts)
    monitor = next(o for o in wrong_port if o["kind"] == "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["port"] = "http-metrics"
    assert len(check.scrape_violations(wrong_port, rendered["prod"])) == len(check.SERVICES)
    one_service = copy.deepcopy(alerts)
    monitor = next(o for o in one_service if o["kind"] == "PodMonitor")
    monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "billing"
    assert [p.split(":")[0] for p in check.scrape_violations(one_service, rendered["prod"])] == [
        f"Deployment/{name}" for name in check.SERVICES if name != "billing"
    ]


def test_the_metrics_table_in_deploy_readme_is_what_the_services_expose(metrics: dict[str, Any]) -> None:
    """deploy/README.md "What to watch" lists every metric of the suite's own, with its type and
    labels, and nothing else (process_ and python_ metrics come with prometheus_client)."""
    table = {}
    for line in (ROOT / "deploy" / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[1] in ("counter", "gauge", "histogram"):
            labels = frozenset(c.strip("` ") for c in cells[2].split(",") if c.strip())
            table[cells[0].strip("`")] = (cells[1], labels)
    exposed = {}
    for name, metric in metrics.items():
        if not name.startswith(("evolutivo_", "grpc_server_")) or name.endswith(("_created", "_count", "_sum")):
            continue
        if name.endswith("_bucket"):
            exposed[name.removesuffix("_bucket")] = ("histogram", metric.labels - {"le"})
        elif name.endswith("_total"):
            exposed[name] = ("counter", metric.labels)
        else:
            exposed[name] = ("gauge", metric.labels)
    assert table == exposed
