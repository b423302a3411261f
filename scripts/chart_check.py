"""Checks of helm/hookgate, run by scripts/chart-check in its venv.

Renders the chart with several sets of values and validates every object:
built-in kinds against the Kubernetes OpenAPI schemas that kubernetes-validate
ships (strict: unknown fields are errors), custom resources (KEDA
ScaledObject/TriggerAuthentication, prometheus-operator ServiceMonitor)
against the pydantic models that cloudcoil generates from those projects' CRD
schemas (also strict: a field the model drops is an error). On top of the
schemas it checks what the design asks of the chart: credentials only in
Secrets, the restrictive securityContext, probes on the served paths,
selectors that match, dispatcher scaling capped at the partition count, and a
dashboard that uses only the metrics hookgate exports.

Prints one line per check and a cargo-style `test result:` line, which
scripts/test adds to its totals.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import kubernetes_validate
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "hookgate"
PRODUCTION = CHART / "values-production.yaml"
HELM = sys.argv[1]
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]

CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TriggerAuthentication,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ServiceMonitor,
}
# The Kafka scaler's metadata (KEDA docs, scalers/apache-kafka).
KEDA_KAFKA_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "version",
    "partitionLimitation", "sasl", "tls", "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions",
}
KEDA_AUTH_PARAMS = {"sasl", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}
# The metric names of the shared telemetry contract.
CONTRACT_METRICS = {
    "hookgate_deliveries_total", "hookgate_delivery_attempt_duration_seconds",
    "hookgate_delivery_lag_seconds", "hookgate_consumer_lag", "hookgate_deliveries_in_flight",
    "hookgate_retry_backlog", "hookgate_dead_letters_total", "hookgate_publish_requests_total",
    "hookgate_published_events_total", "process_cpu_seconds_total",
    "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds",
}
HISTOGRAMS = {"hookgate_delivery_attempt_duration_seconds", "hookgate_delivery_lag_seconds"}
DELIVERY_OUTCOMES = {"success", "failed", "retried", "dead_lettered", "rate_limited"}

# Sentinel credentials: they may appear in Secrets and nowhere else.
SENTINELS = {
    "adminToken": "sentinel-admin-token-0123456789",
    "databaseUrl": "postgres://u:sentinel-db-password@db:5432/hookgate",
    "secretKey": "sentinel-secret-key",
    "kafkaSaslUsername": "sentinel-sasl-user",
    "kafkaSaslPassword": "sentinel-sasl-password",
}

passed = 0
failed = 0


def check(name, fn, *args):
    global passed, failed
    try:
        fn(*args)
    except Exception as error:  # noqa: BLE001 - every failure is reported, then counted
        failed += 1
        detail = str(error) if isinstance(error, AssertionError) else traceback.format_exc()
        print(f"chart-check: {name} ... FAILED\n    {detail.strip()}")
    else:
        passed += 1
        print(f"chart-check: {name} ... ok")


def helm(*args, expect_failure=False):
    run = subprocess.run([HELM, *args], capture_output=True, text=True)
    if expect_failure:
        assert run.returncode != 0, f"helm {' '.join(args)} succeeded but should have failed"
        return run.stderr
    assert run.returncode == 0, f"helm {' '.join(args)}:\n{run.stderr}"
    return run.stdout


def values_args(values: dict | None, files=()):
    args = []
    for f in files:
        args += ["-f", str(f)]
    if values:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        yaml.safe_dump(values, tmp)
        tmp.close()
        args += ["-f", tmp.name]
    return args


def render(values=None, files=(), kube="1.30.0"):
    out = helm("template", "hookgate", str(CHART), "--namespace", "hookgate",
               "--kube-version", kube, *values_args(values, files))
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def lost_fields(sent, kept, path=""):
    """Fields of `sent` that a model dropped (unknown to the CRD schema)."""
    out = []
    if isinstance(sent, dict):
        for key, value in sent.items():
            if not isinstance(kept, dict) or key not in kept:
                out.append(f"{path}.{key}")
            else:
                out += lost_fields(value, kept[key], f"{path}.{key}")
    elif isinstance(sent, list):
        for i, value in enumerate(sent):
            out += lost_fields(value, kept[i] if i < len(kept) else None, f"{path}[{i}]")
    return out


def validate_schemas(docs):
    problems = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        model = CUSTOM.get((doc["apiVersion"], doc["kind"]))
        if model is not None:
            try:
                parsed = model.model_validate(doc)
            except Exception as error:  # noqa: BLE001
                problems.append(f"{name}: {error}")
                continue
            kept = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
            problems += [f"{name}: unknown field {f}" for f in lost_fields(doc, kept)]
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                problems.append(f"{name} (k8s {version}): {error.message} at {list(error.path)}")
            except kubernetes_validate.SchemaNotFoundError as error:
                # Never skipped: a kind we have no schema for is a failure.
                problems.append(f"{name}: {error.message}")
    assert not problems, "\n    ".join(problems)


def pods(docs):
    """(owner name, pod spec, pod labels) of every workload."""
    out = []
    for d in by_kind(docs, "Deployment") + by_kind(docs, "Job"):
        template = d["spec"]["template"]
        out.append((f"{d['kind']}/{d['metadata']['name']}", template["spec"],
                    template["metadata"].get("labels", {})))
    return out


def check_security(docs):
    problems = []
    for owner, spec, _ in pods(docs):
        psc = spec.get("securityContext", {})
        if not (psc.get("runAsNonRoot") and psc.get("runAsUser") == 10001
                and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
            problems.append(f"{owner}: pod securityContext {psc}")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{owner}: mounts a service account token")
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            ok = (sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
                  and sc.get("runAsNonRoot") is True and sc.get("capabilities", {}).get("drop") == ["ALL"]
                  and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
                  and not sc.get("capabilities", {}).get("add"))
            if not ok:
                problems.append(f"{owner}/{c['name']}: securityContext {sc}")
            if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
                problems.append(f"{owner}/{c['name']}: no resource requests and limits")
    assert not problems, "\n    ".join(problems)


def check_probes_and_ports(docs):
    problems = []
    for d in by_kind(docs, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if ports.get("http") != 8080:
                problems.append(f"{d['metadata']['name']}: container port http is {ports.get('http')}, not 8080")
            want = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
            for probe, path in want.items():
                get = c.get(probe, {}).get("httpGet", {})
                if get.get("path") != path or get.get("port") not in ("http", 8080):
                    problems.append(f"{d['metadata']['name']}: {probe} is {get}, want GET {path} on http")
    assert not problems, "\n    ".join(problems)


def matches(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "NotIn" and value in expr["values"]:
            return False
        if expr["operator"] == "Exists" and value is None:
            return False
    return True


def check_wiring(docs):
    """Selectors find their pods; references point at rendered objects."""
    problems = []
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for d in deployments.values():
        if not matches(d["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]):
            problems.append(f"Deployment/{d['metadata']['name']}: selector misses its own pods")
    for s in by_kind(docs, "Service"):
        hits = [l for l in pod_labels if matches({"matchLabels": s["spec"]["selector"]}, l)]
        if len(hits) != 1:
            problems.append(f"Service/{s['metadata']['name']} selects {len(hits)} Deployments' pods")
        if [p["targetPort"] for p in s["spec"]["ports"]] != ["http"]:
            problems.append(f"Service/{s['metadata']['name']}: targetPort is not the http port")
    for p in by_kind(docs, "PodDisruptionBudget"):
        hits = [l for l in pod_labels if matches(p["spec"]["selector"], l)]
        if len(hits) != 1:
            problems.append(f"PodDisruptionBudget/{p['metadata']['name']} selects {len(hits)} Deployments' pods")
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for h in by_kind(docs, kind):
            target = h["spec"]["scaleTargetRef"]["name"]
            if target not in deployments:
                problems.append(f"{kind}/{h['metadata']['name']} scales {target}, which is not rendered")
            elif "replicas" in deployments[target]["spec"]:
                problems.append(f"Deployment/{target} fixes replicas although {kind} scales it")
    configmaps = {c["metadata"]["name"] for c in by_kind(docs, "ConfigMap")}
    secrets = {s["metadata"]["name"] for s in by_kind(docs, "Secret")}
    for owner, spec, _ in pods(docs):
        for c in spec["containers"]:
            for source in c.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref and ref not in configmaps:
                    problems.append(f"{owner}: envFrom ConfigMap {ref} is not rendered")
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets and ref["name"] != "hookgate-credentials":
                    problems.append(f"{owner}: {env['name']} from Secret {ref['name']}, not rendered")
    for m in by_kind(docs, "ServiceMonitor"):
        services = [s for s in by_kind(docs, "Service") if matches(m["spec"]["selector"], s["metadata"]["labels"])]
        components = sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in services)
        if components != sorted(c for c in ("api", "dispatcher")
                                if f"hookgate-{c}" in deployments):
            problems.append(f"ServiceMonitor selects the Services of {components}")
        for e in m["spec"]["endpoints"]:
            if e.get("path") != "/metrics" or any(e["port"] not in [p["name"] for p in s["spec"]["ports"]] for s in services):
                problems.append(f"ServiceMonitor endpoint {e} does not scrape /metrics on a Service port")
    assert not problems, "\n    ".join(problems)


def check_credentials_only_in_secrets(docs):
    problems = []
    for d in docs:
        if d["kind"] == "Secret":
            continue
        text = yaml.safe_dump(d)
        for key, value in SENTINELS.items():
            if value in text:
                problems.append(f"{d['kind']}/{d['metadata']['name']} holds secret.{key}")
    assert not problems, "\n    ".join(problems)


def check_migrations(docs):
    jobs = by_kind(docs, "Job")
    assert len(jobs) == 1, f"{len(jobs)} migration Jobs"
    job = jobs[0]
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}, f"migration Job hooks: {hooks}"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    # The database URL the job reads must exist before the job: a hook of lower weight, or an existing Secret.
    ref = job["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"]
    hook_secrets = [s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == ref]
    if hook_secrets:
        annotations = hook_secrets[0]["metadata"].get("annotations", {})
        assert "pre-install" in annotations.get("helm.sh/hook", ""), "the job's Secret is not a pre-install hook"
        assert int(annotations["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])


def check_dispatcher_scaling(docs, partitions, group="hookgate-dispatcher"):
    scaled = by_kind(docs, "ScaledObject")
    assert len(scaled) == 1, f"{len(scaled)} ScaledObjects"
    spec = scaled[0]["spec"]
    assert spec["maxReplicaCount"] <= partitions, f"maxReplicaCount {spec['maxReplicaCount']} > {partitions} partitions"
    groups = {}
    for t in spec["triggers"]:
        assert t["type"] == "kafka", t
        meta = t["metadata"]
        unknown = set(meta) - KEDA_KAFKA_KEYS
        assert not unknown, f"unknown Kafka scaler metadata {unknown}"
        for key in ("bootstrapServers", "consumerGroup", "lagThreshold"):
            assert meta.get(key), f"trigger {t.get('name')} lacks {key}"
        assert int(meta["lagThreshold"]) > 0
        assert meta["allowIdleConsumers"] == "false", "idle consumers would scale past the partitions"
        if meta.get("limitToPartitionsWithLag") == "true":
            assert meta.get("topic"), "KEDA refuses limitToPartitionsWithLag without a topic"
        groups[meta["consumerGroup"]] = meta.get("topic")
    # The deliver and fan-out stages; never the retry stage, whose lag is waiting by design.
    assert groups.get(f"{group}.deliveries") == "hookgate.deliveries", groups
    deliver = next(t for t in spec["triggers"] if t["metadata"]["consumerGroup"] == f"{group}.deliveries")
    assert deliver["metadata"].get("limitToPartitionsWithLag") == "true", "deliver trigger may scale past the lagging partitions"
    assert group in groups and f"{group}.retries" not in groups, groups
    for auth in by_kind(docs, "TriggerAuthentication"):
        params = {r["parameter"] for r in auth["spec"].get("secretTargetRef", [])}
        assert params and params <= KEDA_AUTH_PARAMS, f"TriggerAuthentication parameters {params}"


def check_dashboard():
    dashboard = json.loads((CHART / "dashboards" / "hookgate.json").read_text())
    panels = []
    stack = list(dashboard["panels"])
    while stack:
        p = stack.pop(0)
        panels.append(p)
        stack += p.get("panels", [])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    used = set()
    problems = []
    for p in panels:
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {p['title']!r} does not use the $datasource variable")
        for t in p.get("targets", []):
            expr = t["expr"]
            for name in re.findall(r"\b((?:hookgate|process)_[a-z_]+)\b", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", name) if name.endswith(("_bucket", "_sum", "_count")) else name
                if base not in CONTRACT_METRICS or (base != name and base not in HISTOGRAMS):
                    problems.append(f"panel {p['title']!r} uses {name}, which hookgate does not export")
                used.add(base)
            for outcome in re.findall(r'outcome=~?"([^"]+)"', expr):
                for o in outcome.split("|"):
                    if o not in DELIVERY_OUTCOMES:
                        problems.append(f"panel {p['title']!r} filters on outcome {o!r}")
            if "{" in expr and 'namespace=~"$namespace"' not in expr:
                problems.append(f"panel {p['title']!r} ignores the namespace variable")
    missing = CONTRACT_METRICS - used
    if missing:
        problems.append(f"no panel shows {sorted(missing)}")
    assert not problems, "\n    ".join(problems)


def check_dashboard_configmap(docs):
    maps = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert len(maps) == 1, "no dashboard ConfigMap"
    assert maps[0]["metadata"]["labels"].get("grafana_dashboard") == "1"
    shipped = json.loads(maps[0]["data"]["hookgate.json"])
    assert shipped == json.loads((CHART / "dashboards" / "hookgate.json").read_text())


def check_config_role_split(docs):
    """Delivery settings go to dispatchers only; the admin token to the API only."""
    maps = {c["metadata"]["name"]: c["data"] for c in by_kind(docs, "ConfigMap")}
    assert "HOOKGATE_RETRY_SCHEDULE" not in maps["hookgate-api"]
    assert maps["hookgate-dispatcher"]["HOOKGATE_LISTEN"] == "0.0.0.0:8080"
    assert maps["hookgate-api"]["HOOKGATE_LISTEN"] == "0.0.0.0:8080"
    for d in by_kind(docs, "Deployment"):
        names = [e["name"] for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])]
        has_token = "HOOKGATE_ADMIN_TOKEN" in names
        assert has_token == d["metadata"]["name"].endswith("-api"), f"{d['metadata']['name']}: admin token {has_token}"


def undocumented(node, path, readme):
    """Paths under `path` that README.md names nowhere: a value is named by its
    full path, or, in the tables the api and dispatcher roles share, by its
    path inside the role. A map named as a whole (`resources`) counts."""
    names = {".".join(path)}
    if len(path) > 1 and path[0] in ("api", "dispatcher"):
        names.add(".".join(path[1:]))
    # A top-level section (`kafka`) is no documentation of what it holds.
    whole = len(path) > 1 or path in (("podSecurityContext",), ("securityContext",))
    is_map = isinstance(node, dict) and node
    if path and (whole or not is_map) and any(f"`{name}`" in readme for name in names):
        return []
    if is_map:
        return [m for key, value in node.items() for m in undocumented(value, (*path, key), readme)]
    return [".".join(path)]


def check_values_documented():
    readme = (CHART / "README.md").read_text()
    missing = undocumented(yaml.safe_load((CHART / "values.yaml").read_text()), (), readme)
    assert not missing, f"values not in helm/hookgate/README.md: {missing}"


def expect_refusal(values, mentions):
    err = helm("template", "hookgate", str(CHART), "--kube-version", "1.30.0",
               *values_args(values), expect_failure=True)
    assert mentions in err, f"helm's error does not mention {mentions!r}:\n{err}"


def main():
    base_sentinels = {"secret": {k: v for k, v in SENTINELS.items()}}
    everything = {
        **copy.deepcopy(base_sentinels),
        "kafka": {"securityProtocol": "SASL_SSL", "sasl": {"enabled": True, "mechanism": "SCRAM-SHA-256"},
                  "properties": {"ssl.ca.location": "/etc/kafka-ca/ca.crt", "client.id": "hookgate"}},
        "api": {"autoscaling": {"enabled": True}, "ingress": {"enabled": True, "hosts": [
            {"host": "hooks.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}]}},
        "dispatcher": {"autoscaling": {"enabled": True, "maxReplicas": 12}},
        "serviceMonitor": {"enabled": True}, "dashboards": {"enabled": True},
        "tracing": {"otlpEndpoint": "http://collector:4317"}, "logging": {"level": "debug"},
    }
    hpa_mode = {**copy.deepcopy(base_sentinels),
                "dispatcher": {"autoscaling": {"enabled": True, "mode": "hpa", "maxReplicas": 6}},
                "topics": {"source": ["^events\\..*"], "publish": "events.main"}}
    cases = {
        "default values": (None, ()),
        "production values": (None, (PRODUCTION,)),
        "chart-made secrets, SASL, KEDA, monitoring": (everything, ()),
        "dispatcher HPA on the external lag metric, regex topics": (hpa_mode, ()),
        "API only": ({"dispatcher": {"enabled": False}, "migrations": {"enabled": False}}, ()),
        "dispatcher only": ({"api": {"enabled": False}}, ()),
    }

    check("helm lint --strict (default values)", helm, "lint", "--strict", str(CHART))
    check("helm lint --strict (production values)", helm, "lint", "--strict", str(CHART), "-f", str(PRODUCTION))

    rendered = {}
    for label, (values, files) in cases.items():
        def do_render(label=label, values=values, files=files):
            rendered[label] = render(values, files)
        check(f"renders: {label}", do_render)
    for label, docs in rendered.items():
        check(f"schemas (k8s {', '.join(KUBE_VERSIONS)} + KEDA/prometheus-operator CRDs): {label}",
              validate_schemas, docs)
        check(f"securityContext and resources: {label}", check_security, docs)
        check(f"probes and ports: {label}", check_probes_and_ports, docs)
        check(f"selectors and references: {label}", check_wiring, docs)
        check(f"credentials only in Secrets: {label}", check_credentials_only_in_secrets, docs)
    if "default values" in rendered:
        docs = rendered["default values"]
        check("migration Job is a pre-install/pre-upgrade hook after its Secret", check_migrations, docs)
        check("settings split by role", check_config_role_split, docs)
        def no_autoscaler(docs=docs):
            assert not by_kind(docs, "ScaledObject") and not by_kind(docs, "HorizontalPodAutoscaler")
            assert all(d["spec"]["replicas"] >= 1 for d in by_kind(docs, "Deployment"))
        check("default: no autoscaler, fixed replicas", no_autoscaler)
    if "production values" in rendered:
        docs = rendered["production values"]
        check("production: KEDA lag triggers on deliver and fan-out, capped at 24 partitions",
              check_dispatcher_scaling, docs, 24)
        check("production: migration Job reads the existing Secret", check_migrations, docs)
        check("production: dashboard ConfigMap for the Grafana sidecar", check_dashboard_configmap, docs)
    if "chart-made secrets, SASL, KEDA, monitoring" in rendered:
        check("chart-made: KEDA triggers authenticate from the chart's Secret",
              check_dispatcher_scaling, rendered["chart-made secrets, SASL, KEDA, monitoring"], 12)
    if "dispatcher HPA on the external lag metric, regex topics" in rendered:
        def hpa_capped():
            docs = rendered["dispatcher HPA on the external lag metric, regex topics"]
            hpas = [h for h in by_kind(docs, "HorizontalPodAutoscaler") if h["metadata"]["name"].endswith("-dispatcher")]
            assert len(hpas) == 1 and hpas[0]["spec"]["maxReplicas"] <= 12
            metric = hpas[0]["spec"]["metrics"][0]["external"]["metric"]
            assert metric["name"] == "hookgate_consumer_lag"
            assert metric["selector"]["matchLabels"]["group"] == "hookgate-dispatcher.deliveries"
            assert not by_kind(docs, "ScaledObject")
        check("HPA mode: external hookgate_consumer_lag metric, capped", hpa_capped)

    check("refuses dispatcher maxReplicas above the partitions", expect_refusal,
          {"dispatcher": {"autoscaling": {"enabled": True, "maxReplicas": 13}}}, "partitions")
    check("refuses a partitions override below maxReplicas", expect_refusal,
          {"dispatcher": {"autoscaling": {"enabled": True, "maxReplicas": 8, "partitions": 6}}}, "partitions")
    check("refuses fixed dispatcher replicas above the partitions", expect_refusal,
          {"topics": {"partitions": 1}}, "partitions")
    check("refuses a credential in kafka.properties (it would land in a ConfigMap)", expect_refusal,
          {"kafka": {"properties": {"sasl.password": "x"}}}, "Secret")
    check("refuses SASL without credentials", expect_refusal,
          {"kafka": {"sasl": {"enabled": True}}}, "kafkaSaslPassword")
    check("refuses an unknown log format", expect_refusal, {"logging": {"format": "xml"}}, "logging.format")
    check("dashboard uses only exported metrics, and all of them", check_dashboard)
    check("every value is documented in the chart's README", check_values_documented)

    status = "ok" if failed == 0 else "FAILED"
    print(f"test result: {status}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
