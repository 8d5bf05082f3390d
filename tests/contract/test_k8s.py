"""deploy/k8s against the code and the published schemas, offline.

Every overlay renders with kustomize; every rendered object is validated against the schema of
its kind: Kubernetes' own kinds against the OpenAPI-derived schemas the kubernetes-validate
package ships (strict: unknown fields fail), Strimzi, KEDA and prometheus-operator kinds against
their CRDs' ``openAPIV3Schema`` (tests/contract/k8s_schemas/fetch.sh gets them; unknown fields
fail unless the schema preserves them). Then the manifests against the code: real settings,
real commands, the topics of ``streams.topology.topic_specs``, the stages' groups and topics,
the PrometheusRule equal to deploy/prometheus/alerts.yml.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
SCHEMAS = ROOT / ".cache" / "k8s-schemas"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
"""The oldest and newest Kubernetes the manifests are checked against."""
CORE_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1"}
LONG_RUNNING = ("Deployment", "StatefulSet")

Obj = dict[str, Any]


def kustomize_command() -> list[str]:
    """The venv's kustomize (`make test` installs it when kubectl has none), else kubectl's."""
    local = ROOT / ".venv" / "bin" / "kustomize"
    if local.exists():
        return [str(local), "build"]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("no kustomize: `make test` installs one (Makefile, k8s-tools)")
    return [kubectl, "kustomize"]


@functools.cache
def render(path: str) -> tuple[Obj, ...]:
    """The objects ``kustomize build deploy/k8s/<path>`` prints."""
    done = subprocess.run([*kustomize_command(), str(K8S / path)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def of_kind(objs: tuple[Obj, ...], *kinds: str) -> list[Obj]:
    return [o for o in objs if o["kind"] in kinds]


def settings_env(objs: tuple[Obj, ...]) -> dict[str, str]:
    """The data of the settings ConfigMap (its name carries kustomize's hash)."""
    maps = [o for o in of_kind(objs, "ConfigMap")
            if o["metadata"]["name"].startswith("xp-streams-settings")]
    assert len(maps) == 1, [m["metadata"]["name"] for m in maps]
    data: dict[str, str] = maps[0]["data"]
    return data


def container(obj: Obj) -> Obj:
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, obj["metadata"]["name"]
    c: Obj = containers[0]
    return c


# -- schemas -----------------------------------------------------------------------------------

def strict(schema: Any) -> Any:
    """A CRD schema made strict the way the API server's field validation is: an object with
    ``properties`` and neither ``additionalProperties`` nor
    ``x-kubernetes-preserve-unknown-fields`` accepts no other field."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        if out.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return out
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    return schema


@functools.cache
def crd_schemas() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> the strict ``openAPIV3Schema`` of every fetched CRD version."""
    if not SCHEMAS.is_dir():
        pytest.fail(f"{SCHEMAS} missing: `make test` runs tests/contract/k8s_schemas/fetch.sh")
    found: dict[tuple[str, str], Any] = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            found[(f"{group}/{version['name']}", kind)] = strict(schema)
    return found


def validate(obj: Obj) -> None:
    """Validate one rendered object against the schema of its kind.

    Raises:
        AssertionError: no schema for its kind, or it does not conform.
    """
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    if obj["apiVersion"] in CORE_GROUPS:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{name} (Kubernetes {version}): {exc.message} at "
                                     f"{'.'.join(map(str, exc.path))}") from exc
        return
    schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
    assert schema is not None, f"{name}: no published schema for {obj['apiVersion']}"
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=str)
    assert not errors, f"{name}: " + "; ".join(
        f"{e.message} at {'.'.join(map(str, e.path))}" for e in errors)


@pytest.mark.parametrize("path", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_every_rendered_object_conforms_to_the_schema_of_its_kind(path: str) -> None:
    objs = render(path)
    assert objs
    for obj in objs:
        validate(obj)


def test_the_base_needs_no_operator() -> None:
    """A cluster without Strimzi, KEDA or prometheus-operator still applies the base."""
    assert {o["apiVersion"] for o in render("base")} <= CORE_GROUPS


def test_the_validation_rejects_what_the_api_server_would() -> None:
    """The checks can fail: an unknown field, a wrong type, a missing required field."""
    worker = copy.deepcopy(of_kind(render("overlays/prod"), "StatefulSet")[0])
    container(worker)["imagePullPolcy"] = "Always"
    with pytest.raises(AssertionError, match="imagePullPolcy"):
        validate(worker)
    topic = copy.deepcopy(of_kind(render("overlays/prod"), "KafkaTopic")[0])
    topic["spec"]["partitions"] = "eight"
    with pytest.raises(AssertionError, match="partitions"):
        validate(topic)
    scaled = copy.deepcopy(of_kind(render("overlays/prod"), "ScaledObject")[0])
    del scaled["spec"]["scaleTargetRef"]
    with pytest.raises(AssertionError, match="scaleTargetRef"):
        validate(scaled)


# -- the manifests against the code ------------------------------------------------------------

def real_settings() -> set[str]:
    from tests.contract.test_deploy import real_settings as names

    return names()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_env_var_is_a_real_setting_and_no_secret_is_written(overlay: str) -> None:
    objs = render(f"overlays/{overlay}")
    assert not of_kind(objs, "Secret"), "a Secret in the manifests: credentials are created"
    settings = real_settings()
    assert set(settings_env(objs)) <= settings, set(settings_env(objs)) - settings
    for obj in of_kind(objs, *LONG_RUNNING, "Job"):
        for env in container(obj).get("env", []):
            assert env["name"] in settings, (obj["metadata"]["name"], env["name"])
            if any(word in env["name"] for word in ("PASSWORD", "DATABASE_URL")):
                assert "value" not in env, f"{env['name']} written into a manifest"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_a_real_command_and_every_stage_runs(overlay: str) -> None:
    from click import Group

    from streams import topology
    from streams.cli import main
    from streams.settings import Settings

    assert isinstance(main, Group)
    objs = render(f"overlays/{overlay}")
    running = {container(o)["args"][0] for o in of_kind(objs, *LONG_RUNNING)}
    jobs = {container(o)["args"][0] for o in of_kind(objs, "Job")}
    assert running | jobs <= set(main.commands), (running | jobs) - set(main.commands)
    assert running == {st.command for st in topology.stages(Settings())} | {"monitor"}
    assert "migrate" in jobs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_pods_are_probed_and_locked_down(overlay: str) -> None:
    for obj in of_kind(render(f"overlays/{overlay}"), *LONG_RUNNING):
        pod, c = obj["spec"]["template"]["spec"], container(obj)
        name = obj["metadata"]["name"]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert {"name": "metrics", "containerPort": 9400} in c["ports"], name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert pod["automountServiceAccountToken"] is False, name
        assert "limits" in c["resources"] and "requests" in c["resources"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_worker_is_a_statefulset_with_no_more_replicas_than_partitions(
        overlay: str) -> None:
    objs = render(f"overlays/{overlay}")
    (worker,) = of_kind(objs, "StatefulSet")
    env = settings_env(objs)
    assert container(worker)["args"] == ["worker"]
    assert 1 <= worker["spec"]["replicas"] <= int(env["XP_TOPIC_PARTITIONS"])
    mounts = {m["name"]: m["mountPath"] for m in container(worker)["volumeMounts"]}
    assert env["XP_DATA_DIR"].startswith(mounts["data"] + "/")  # RocksDB on the volume
    instance = [e for e in container(worker)["env"] if e["name"] == "XP_WORKER_INSTANCE_ID"]
    assert instance[0]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert int(env["XP_WORKER_STANDBY_REPLICAS"]) < worker["spec"]["replicas"] or (
        env["XP_WORKER_STANDBY_REPLICAS"] == "0")
    disrupted = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
                 for p in of_kind(objs, "PodDisruptionBudget")}
    assert {o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
            for o in of_kind(objs, *LONG_RUNNING)} <= disrupted


def test_strimzi_topics_are_the_pipelines_topics() -> None:
    from streams.settings import Settings
    from streams.topology import topic_specs

    objs = render("overlays/prod")
    partitions = int(settings_env(objs)["XP_TOPIC_PARTITIONS"])
    specs = {s.name: s for s in topic_specs(Settings().with_(topic_partitions=partitions))}
    declared = {t["spec"]["topicName"]: t["spec"] for t in of_kind(objs, "KafkaTopic")}
    assert set(declared) == set(specs)
    replicas = int(settings_env(objs)["XP_TOPIC_REPLICATION_FACTOR"])
    for name, spec in specs.items():
        assert declared[name]["partitions"] == spec.partitions, name
        assert declared[name]["replicas"] == replicas, name
        config = {k: str(v) for k, v in declared[name]["config"].items()}  # YAML ints
        assert dict(spec.configs).items() <= config.items(), name
    users = of_kind(objs, "KafkaUser")
    assert [u["metadata"]["name"] for u in users] == [settings_env(objs)["KAFKA_SASL_USERNAME"]]
    assert not [j for j in of_kind(objs, "Job") if container(j)["args"] == ["create-topics"]]


def test_the_strimzi_user_may_run_the_workers_transactions() -> None:
    """The worker commits each checkpoint in a transaction of transactional id
    <XP_WORKER_GROUP>-<partition>: without Write on it the worker exits at its first
    assignment on a cluster with ACLs."""
    from streams import topics
    from streams.settings import Settings

    objs = render("overlays/prod")
    group = settings_env(objs).get("XP_WORKER_GROUP", Settings().worker_group)
    (user,) = of_kind(objs, "KafkaUser")
    allowed = [acl for acl in user["spec"]["authorization"]["acls"]
               if acl["resource"]["type"] == "transactionalId"
               and {"Write", "Describe"} <= set(acl["operations"])]
    for p in range(int(settings_env(objs)["XP_TOPIC_PARTITIONS"])):
        tid = topics.transactional_id(group, p)
        assert any(tid.startswith(acl["resource"]["name"])
                   if acl["resource"].get("patternType") == "prefix"
                   else tid == acl["resource"]["name"] for acl in allowed), tid


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_each_sink_on_its_own_group_and_topic(overlay: str) -> None:
    from streams import topology
    from streams.settings import Settings

    objs = render(f"overlays/{overlay}")
    deployments = {d["metadata"]["name"]: container(d)["args"][0]
                   for d in of_kind(objs, "Deployment")}
    sinks = {st.command: st for st in topology.stages(Settings()) if st.sink}
    scaled = of_kind(objs, "ScaledObject")
    assert len(scaled) == len(sinks) - 1  # the rules sink reads one partition
    for obj in scaled:
        command = deployments[obj["spec"]["scaleTargetRef"]["name"]]
        (trigger,) = obj["spec"]["triggers"]
        meta = trigger["metadata"]
        assert (meta["consumerGroup"], meta["topic"]) == (sinks[command].group,
                                                          sinks[command].topic), command
        assert meta["allowIdleConsumers"] == "false"  # never more replicas than partitions
        assert meta["bootstrapServersFromEnv"] == "KAFKA_BOOTSTRAP_SERVERS"
    for d in of_kind(objs, "Deployment"):
        if d["metadata"]["name"] in {o["spec"]["scaleTargetRef"]["name"] for o in scaled}:
            assert "replicas" not in d["spec"], "a replica count would undo KEDA's scaling"


def test_prometheus_rule_and_dashboard_equal_their_sources() -> None:
    objs = render("overlays/prod")
    (rule,) = of_kind(objs, "PrometheusRule")
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"], "stale: run `make k8s-generate`"
    (dashboard,) = [o for o in of_kind(objs, "ConfigMap")
                    if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    source = json.loads((ROOT / "deploy" / "grafana" / "xp-streams.json").read_text())
    assert json.loads(dashboard["data"]["xp-streams.json"]) == source, \
        "stale: run `make k8s-generate`"
    (monitor,) = of_kind(objs, "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/part-of":
                                                          "xp-streams"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_restarted_worker_pod_keeps_its_partitions(overlay: str) -> None:
    """Workers use static membership (their pod name); the session timeout must outlast a pod
    restart (docs/runbook.md, 5b: 45 s), or each restart costs two rebalances of everyone."""
    from streams.settings import Settings, variable

    objs = render(f"overlays/{overlay}")
    (worker,) = [o for o in of_kind(objs, "StatefulSet") if container(o)["args"] == ["worker"]]
    assert variable("worker_instance_id").name in {e["name"] for e in container(worker)["env"]}
    timeout = float(settings_env(objs).get(variable("broker_session_timeout").name,
                                           Settings().broker_session_timeout))
    assert 45 <= timeout <= 300, timeout


def operator_job(monitor: Obj, endpoint: Obj, namespace: str, pod_labels: dict[str, str]) -> str:
    """The ``job`` label prometheus-operator gives a PodMonitor target: ``<namespace>/<name>``
    (or the pod label ``jobLabel`` names), then the endpoint's relabelings that target
    ``job`` (one source label, ``$1`` replaced; the operator's default regex ``(.*)``)."""
    job_label = monitor["spec"].get("jobLabel")
    job = pod_labels.get(job_label, "") if job_label else (
        f"{namespace}/{monitor['metadata']['name']}")
    for rule in endpoint.get("relabelings", []):
        if rule.get("targetLabel") != "job":
            continue
        (source,) = rule["sourceLabels"]
        prefix = "__meta_kubernetes_pod_label_"
        assert source.startswith(prefix), source
        label = next(k for k in pod_labels
                     if re.sub(r"[^a-zA-Z0-9_]", "_", k) == source[len(prefix):])
        job = rule.get("replacement", "$1").replace("$1", pod_labels[label])
    return job


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_operator_targets_match_the_alerts_job_selector(overlay: str) -> None:
    """XpProcessDown and the dashboard select ``job=~"xp-streams-.*"``: every pipeline pod's
    target must get such a job under prometheus-operator (its default, ``<namespace>/<name>``,
    matched nothing), and kube-prometheus-stack must select the PodMonitor and the rules."""
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    (down,) = [r for g in rules["groups"] for r in g["rules"] if r["alert"] == "XpProcessDown"]
    selector = re.search(r'job=~"([^"]+)"', down["expr"])
    assert selector is not None
    objs = render(f"overlays/{overlay}")
    (monitor,) = of_kind(objs, "PodMonitor")
    (rule,) = of_kind(objs, "PrometheusRule")
    for obj in (monitor, rule):
        assert obj["metadata"]["labels"].get("release"), obj["metadata"]["name"]
    selected = monitor["spec"]["selector"]["matchLabels"]
    pods = [o for o in of_kind(objs, *LONG_RUNNING)
            if selected.items() <= o["spec"]["template"]["metadata"]["labels"].items()]
    assert {container(p)["args"][0] for p in pods} >= {"worker", "sink", "monitor"}
    for pod in pods:
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            job = operator_job(monitor, endpoint, "xp-prod",
                               pod["spec"]["template"]["metadata"]["labels"])
            assert re.fullmatch(selector.group(1), job), (pod["metadata"]["name"], job)


FIRST = ("xp-streams/first", "true")
"""The label of what the runbook applies first (docs/runbook.md, 5a)."""


def references(pod_spec: Obj) -> set[tuple[str, str]]:
    """(kind, name) of the ServiceAccount, ConfigMaps and Secrets a pod spec uses."""
    found = {("ServiceAccount", pod_spec.get("serviceAccountName", "default"))}
    for c in pod_spec["containers"]:
        for source in c.get("envFrom", []):
            for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if key in source:
                    found.add((kind, source[key]["name"]))
        for env in c.get("env", []):
            ref = env.get("valueFrom", {})
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if key in ref:
                    found.add((kind, ref[key]["name"]))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_what_the_runbook_applies_first_is_complete(overlay: str) -> None:
    """``kubectl apply -l xp-streams/first=true`` must bring every object its Jobs use that
    the manifests hold (Secrets are created beforehand, by hand): a Job whose ServiceAccount
    or ConfigMap is left for later gets its pods refused and the wait times out."""
    objs = render(f"overlays/{overlay}")
    first = {(o["kind"], o["metadata"]["name"]) for o in objs
             if o["metadata"].get("labels", {}).get(FIRST[0]) == FIRST[1]}
    jobs = [o for o in of_kind(objs, "Job") if ("Job", o["metadata"]["name"]) in first]
    assert {container(j)["args"][0] for j in jobs} >= {"migrate"}
    held = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for job in jobs:
        used = references(job["spec"]["template"]["spec"]) & held
        assert used <= first, (job["metadata"]["name"], used - first)
    assert not [j for j in of_kind(objs, "Job") if ("Job", j["metadata"]["name"]) not in first]


def test_the_upgrade_deletes_every_job_before_applying() -> None:
    """A Job's pod template is immutable: the runbook's upgrade (5b) deletes each Job of the
    manifests (both overlays) before it applies the new ones, or the apply fails."""
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    section = runbook[runbook.index("### 5b. Upgrading on Kubernetes"):]
    block = section[section.index("```bash"):section.index("```", section.index("```bash") + 3)]
    deletes = [line for line in block.splitlines() if "delete job" in line]
    assert deletes and block.index(deletes[0]) < block.index("kubectl apply")
    jobs = {j["metadata"]["name"] for overlay in OVERLAYS
            for j in of_kind(render(f"overlays/{overlay}"), "Job")}
    assert jobs <= set(" ".join(deletes).split()), jobs


def test_keda_threshold_is_seconds_of_a_sinks_measured_rate() -> None:
    """lagThreshold / the ledger sink's rate in README's Performance table (the slower run)
    is 10 to 30 s of work: a replica per burst (the old 20,000: half a second) or never."""
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| ledger sink alone |"))
    rate = min(int(n.replace(",", "")) for n in re.findall(r"\| ([\d,]{5,}) \|", row))
    objs = render("overlays/prod")
    for obj in of_kind(objs, "ScaledObject"):
        (trigger,) = obj["spec"]["triggers"]
        seconds = int(trigger["metadata"]["lagThreshold"]) / rate
        assert 10 <= seconds <= 30, (obj["metadata"]["name"], rate, seconds)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_spread_over_nodes(overlay: str) -> None:
    """Workers hold each other's standbys: a node may hold at most one more than another."""
    objs = render(f"overlays/{overlay}")
    (worker,) = [o for o in of_kind(objs, "StatefulSet") if container(o)["args"] == ["worker"]]
    spec = worker["spec"]["template"]["spec"]
    own = worker["spec"]["template"]["metadata"]["labels"]
    hard = [c for c in spec.get("topologySpreadConstraints", [])
            if c["topologyKey"] == "kubernetes.io/hostname"
            and c["whenUnsatisfiable"] == "DoNotSchedule" and c["maxSkew"] == 1]
    assert hard and hard[0]["labelSelector"]["matchLabels"].items() <= own.items()
