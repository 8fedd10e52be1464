"""The chart rendered by a real helm, validated against Kubernetes' schemas and checked for
the wiring that schemas cannot see: selectors, probes, the shared repository's path,
the fine-tune ranks' rendezvous."""

from __future__ import annotations

import json
import subprocess

import kubernetes_validate
import pytest

from .conftest import CHART, CI_VALUES, find, finetune_template, render

# The chart's kubeVersion floor and the newest schemas kubernetes-validate has.
K8S_VERSIONS = ("1.28.0", "1.37.0")
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("kubeflow.org/v2beta1", "MPIJob"),
        ("keda.sh/v1alpha1", "ScaledObject")}
CASES = ["default", *(p.stem for p in CI_VALUES)]


def pod_specs(doc: dict) -> list[dict]:
    spec = doc.get("spec") or {}
    if doc["kind"] == "Pod":
        return [spec]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if doc["kind"] == "MPIJob":
        return [r["template"]["spec"] for r in spec["mpiReplicaSpecs"].values()]
    if isinstance(spec.get("template"), dict):
        return [spec["template"]["spec"]]
    return []


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if pod_specs(d)]


def test_ci_values_exist_for_each_optional_part():
    assert {p.stem for p in CI_VALUES} >= {"full-values", "existing-claim-values", "mpijob-values",
                                          "queue-autoscaling-values"}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_is_valid_kubernetes(rendered, case, version):
    docs = rendered[case]
    docs = docs + [finetune_template(docs)]  # what the launcher will create must be valid too
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue  # no schema ships for CRDs; see the CRD tests below
        kubernetes_validate.validate(doc, version, strict=True)


def test_an_invalid_manifest_is_caught_by_the_validator(rendered):
    deployment = json.loads(json.dumps(find(rendered["default"], "Deployment", "-gateway")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"x": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.37.0", strict=True)


def test_the_schema_refuses_unknown_and_mistyped_values(helm):
    for bad in ("gateway.replicas=3", "finetune.workers=0", "repository.mountPath=models",
                "gateway.service.grpcPort=70000", "gateway.grpcReadinessProbe.port=8001"):
        proc = subprocess.run([helm, "lint", str(CHART), "--set", bad], capture_output=True, text=True)
        assert proc.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in proc.stdout + proc.stderr, bad


def test_helm_lint_passes_for_every_values_file(helm):
    for values in [None, *CI_VALUES]:
        cmd = [helm, "lint", str(CHART), "--strict"] + (["-f", str(values)] if values else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", CASES)
def test_selectors_match_the_pods_they_select(rendered, case):
    docs = rendered[case]
    for doc in docs:
        if doc["kind"] in ("Deployment", "PodDisruptionBudget", "ServiceMonitor"):
            selector = doc["spec"]["selector"]["matchLabels"]
            targets = [d for d in docs if d["kind"] == "Deployment" and
                       selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
            assert len(targets) == 1, (doc["kind"], doc["metadata"]["name"], selector)
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
            if doc["metadata"]["name"].endswith("-finetune"):
                pod_labels = finetune_template(docs)["spec"]["template"]["metadata"]["labels"]
                assert selector.items() <= pod_labels.items()
                continue
            target = [d for d in docs if d["kind"] == "Deployment" and
                      selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
            assert len(target) == 1, doc["metadata"]["name"]
            ports = {p["name"] for c in target[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            assert {p["targetPort"] for p in doc["spec"]["ports"]} <= ports
    # Services of different components never select each other's pods.
    gateway = find(docs, "Service", "-gateway")["spec"]["selector"]
    assert gateway["app.kubernetes.io/component"] == "gateway"
    if case != "existing-claim-values":
        scaler = [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
        assert len(scaler) == 1, [d["kind"] for d in scaler]  # never both: KEDA owns its own HPA
        assert scaler[0]["spec"]["scaleTargetRef"]["name"] == find(docs, "Deployment", "-gateway")["metadata"]["name"]


@pytest.mark.parametrize("case", CASES)
def test_probes_hit_the_v2_health_routes(rendered, case):
    for deployment in (d for d in rendered[case] if d["kind"] == "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        readiness = container["readinessProbe"]
        if "grpc" in readiness:  # gateway.grpcReadinessProbe: see the gRPC tests below
            assert container["name"] == "gateway"
            continue
        assert readiness["httpGet"]["path"] == "/v2/health/ready"
        assert readiness["httpGet"]["port"] in {p["name"] for p in container["ports"]}
    test_pod = find(rendered[case], "Pod", "-test-ready")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = test_pod["spec"]["containers"][0]["command"][-1]
    svc = find(rendered[case], "Service", "-gateway")
    assert f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}/v2/health/ready" in script


def _mount_of(pod: dict, container: dict, volume: str = "models") -> str:
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume]
    (vol,) = [v for v in pod["volumes"] if v["name"] == volume]
    return mount["mountPath"], vol["persistentVolumeClaim"]["claimName"]


@pytest.mark.parametrize("case", CASES)
def test_the_repository_is_mounted_where_each_container_looks_for_it(rendered, case):
    docs = rendered[case]
    claims = set()
    gateway = find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    (gw,) = gateway["containers"]
    settings = json.loads(find(docs, "ConfigMap", "-gateway")["data"]["gateway.json"])
    path, claim = _mount_of(gateway, gw)
    assert settings["repo"] == path and "--config" in gw["args"]
    config_mount = next(m for m in gw["volumeMounts"] if m["name"] == "config")
    assert gw["args"][gw["args"].index("--config") + 1] == config_mount["mountPath"]
    claims.add(claim)

    # Every fine-tune rank (template, run Job, CronJob) gets --repo at its own mount.
    jobs = [finetune_template(docs)["spec"]["template"]["spec"]]
    jobs += [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Job"]
    jobs += [d["spec"]["jobTemplate"]["spec"]["template"]["spec"] for d in docs if d["kind"] == "CronJob"]
    for pod in jobs:
        (trainer,) = pod["containers"]
        rank_path, claim = _mount_of(pod, trainer)
        claims.add(claim)
        assert rank_path == path
        if trainer["args"]:
            assert trainer["args"][trainer["args"].index("--repo") + 1] == rank_path
            result = trainer["args"][trainer["args"].index("--result-file") + 1]
            assert result.startswith(f"{rank_path}/")
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-triton"):
            pod = d["spec"]["template"]["spec"]
            (triton,) = pod["containers"]
            t_path, claim = _mount_of(pod, triton)
            assert f"--model-repository={t_path}" in triton["args"] and "--model-control-mode=poll" in triton["args"]
            assert t_path == path
            claims.add(claim)
            svc = find(docs, "Service", "-triton")
            assert settings["runtime"]["kind"] == "triton"
            assert settings["runtime"]["triton"]["endpoints"] == [
                f"{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"]
    assert len(claims) == 1
    pvcs = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    if case == "existing-claim-values":
        assert not pvcs and claims == {"shared-models"}
    else:
        (pvc,) = pvcs
        assert pvc["metadata"]["name"] in claims and pvc["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("case", CASES)
def test_fine_tune_ranks_can_find_each_other(rendered, case):
    docs = rendered[case]
    svc = find(docs, "Service", "-finetune")
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    specs = [finetune_template(docs)["spec"]] + [d["spec"] for d in docs if d["kind"] == "Job"]
    specs += [d["spec"]["jobTemplate"]["spec"] for d in docs if d["kind"] == "CronJob"]
    for spec in specs:
        assert spec["completionMode"] == "Indexed"
        assert spec["completions"] == spec["parallelism"]  # every rank runs at once
        pod = spec["template"]["spec"]
        assert pod["subdomain"] == svc["metadata"]["name"]
        assert svc["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
        (trainer,) = pod["containers"]
        env = {e["name"]: e for e in trainer["env"]}
        assert env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == \
            "metadata.labels['batch.kubernetes.io/job-name']"
        # Indexed Job pods are named <job>-<index>: rank 0 is <job>-0 under the subdomain.
        assert env["TUNEGATE_RENDEZVOUS_HOST"]["value"] == f"$(JOB_NAME)-0.{svc['metadata']['name']}"
        # $(JOB_NAME) expands only from variables defined earlier in the list.
        names = [e["name"] for e in trainer["env"]]
        assert names.index("JOB_NAME") < names.index("TUNEGATE_RENDEZVOUS_HOST")
        assert int(env["TUNEGATE_WORLD_SIZE"]["value"]) == spec["completions"]
        port = int(env["TUNEGATE_RENDEZVOUS_PORT"]["value"])
        assert port == trainer["ports"][0]["containerPort"] == svc["spec"]["ports"][0]["port"]
        assert trainer["command"] == ["python", "-m", "trainer.cluster"]
        assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["containerName"] == trainer["name"]
        assert pod["restartPolicy"] == "Never"


@pytest.mark.parametrize("case", CASES)
def test_pods_are_locked_down(rendered, case):
    for doc in workloads(rendered[case]):
        for pod in pod_specs(doc):
            assert pod["securityContext"]["runAsNonRoot"] is True
            for c in pod["containers"]:
                if doc["kind"] == "MPIJob":
                    continue  # sshd needs a writable $HOME; see Dockerfile.trainer
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"]["drop"] == ["ALL"]
                if doc["kind"] != "Pod":  # the test pod writes nothing; servers and ranks need /tmp
                    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), doc["metadata"]["name"]


def test_config_changes_roll_the_gateway(helm):
    def checksum(*sets):
        docs = render(helm, sets=sets)
        return find(docs, "Deployment", "-gateway")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() == checksum()
    assert checksum() != checksum("gateway.config.log_level=DEBUG")


def test_api_key_comes_from_a_secret(rendered):
    full = rendered["full-values"]
    env = {e["name"]: e for e in find(full, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["TUNEGATE_API_KEY"]["valueFrom"]["secretKeyRef"]
    secret = find(full, "Secret", "-api-key")
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["data"]
    byo = rendered["existing-claim-values"]
    env = {e["name"]: e for e in find(byo, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TUNEGATE_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "tunegate-keys", "key": "gateway"}
    assert not [d for d in byo if d["kind"] == "Secret"]
    default_env = find(rendered["default"], "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "TUNEGATE_API_KEY" not in {e["name"] for e in default_env}


def test_gpus_go_into_limits_and_pick_the_cuda_image(rendered):
    (gw,) = find(rendered["full-values"], "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"]
    assert gw["resources"]["limits"]["nvidia.com/gpu"] == 1 and gw["image"].endswith("-cuda")
    (gw,) = find(rendered["default"], "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in gw["resources"]["limits"] and not gw["image"].endswith("-cuda")


def test_the_launcher_role_covers_what_the_launcher_calls(rendered):
    docs = rendered["default"]
    rules = find(docs, "Role")["rules"]
    allowed = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    # gateway/jobs/kubernetes.py: create/read/delete Jobs, list pods + read rank 0's log.
    for need in [("batch", "jobs", "create"), ("batch", "jobs", "get"), ("batch", "jobs", "delete"),
                 ("", "pods", "list"), ("", "pods/log", "get")]:
        assert need in allowed
    binding = find(docs, "RoleBinding")
    sa = find(docs, "ServiceAccount")
    assert binding["subjects"][0]["name"] == sa["metadata"]["name"]
    assert find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    # The rank pods share the account but not its token.
    assert finetune_template(docs)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_mpijob_starts_horovodrun_over_the_worker_hosts(rendered):
    docs = rendered["mpijob-values"]
    mpi = find(docs, "MPIJob")
    assert not [d for d in docs if d["kind"] == "Job"]
    launcher = mpi["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    workers = mpi["spec"]["mpiReplicaSpecs"]["Worker"]
    args = launcher["args"]
    hosts = args[args.index("--hosts") + 1].split(",")
    name = mpi["metadata"]["name"]
    assert hosts == [f"{name}-worker-{i}.{name}.ml.svc:2" for i in range(workers["replicas"])]
    assert int(args[args.index("--np") + 1]) == 2 * workers["replicas"] == 2 * mpi["spec"]["slotsPerWorker"]
    assert launcher["command"] == ["tunegate", "finetune"]
    assert workers["template"]["spec"]["containers"][0]["command"][0] == "/usr/sbin/sshd"


def test_notes_tell_how_to_reach_the_gateway(helm):
    out = subprocess.run([helm, "install", "rel", str(CHART), "--dry-run=client", "--namespace", "ml"],
                         capture_output=True, text=True, check=True).stdout
    notes = out.split("NOTES:", 1)[1]
    assert "kubectl port-forward -n ml svc/rel-tunegate-gateway" in notes and "/v2/health/ready" in notes
    assert "WARNING: no API key" in notes


@pytest.mark.parametrize("case", CASES)
def test_the_gateway_accepts_its_rendered_settings(rendered, case, tmp_path, monkeypatch):
    from gateway.settings import load_settings

    path = tmp_path / "gateway.json"
    path.write_text(find(rendered[case], "ConfigMap", "-gateway")["data"]["gateway.json"])
    container = find(rendered[case], "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]
    # The pod's TUNEGATE_* environment, as the kubelet resolves it (rendered into namespace "ml").
    for env in container["env"]:
        if env["name"].startswith("TUNEGATE_"):
            field_path = env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            monkeypatch.setenv(env["name"], env.get("value") or ("ml" if field_path == "metadata.namespace" else "x"))
    settings = load_settings(path)  # extra="forbid": an unknown key fails here
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(settings.repo) == mounts["models"] and settings.host == "0.0.0.0"
    # Fine-tunes run as Jobs from the mounted template, in the release's namespace.
    assert settings.loop.launcher == "kubernetes" and settings.loop.namespace == "ml"
    assert str(settings.loop.job_template) == f"{mounts['finetune-template']}/job.yaml"
    assert settings.grpc_port == _container_ports(container).get("grpc", 0)


def _container_ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def _gateway_container(docs: list[dict]) -> dict:
    (container,) = find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("case", CASES)
def test_the_service_reaches_the_grpc_front_end_the_gateway_is_told_to_serve(rendered, case):
    docs = rendered[case]
    settings = json.loads(find(docs, "ConfigMap", "-gateway")["data"]["gateway.json"])
    container_ports = _container_ports(_gateway_container(docs))
    service_ports = {p["name"]: p for p in find(docs, "Service", "-gateway")["spec"]["ports"]}
    if case == "mpijob-values":  # gateway.service.grpcPort: 0
        assert settings["grpc_port"] == 0 and "grpc" not in container_ports and "grpc" not in service_ports
        return
    # Triton's default port inside the pod; the Service port is the value's.
    assert settings["grpc_port"] == container_ports["grpc"] == 8001
    assert service_ports["grpc"]["targetPort"] == "grpc"
    assert service_ports["grpc"]["port"] == (9001 if case == "existing-claim-values" else 8001)
    assert settings["port"] == container_ports["http"] and service_ports["http"]["targetPort"] == "http"


def test_grpc_readiness_is_opt_in_and_asks_the_standard_health_service(rendered):
    from gateway.grpc.health import SERVICES

    default = _gateway_container(rendered["default"])
    assert default["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    full = _gateway_container(rendered["full-values"])  # grpcReadinessProbe.enabled, periodSeconds 10
    probe = full["readinessProbe"]
    assert "httpGet" not in probe and probe["periodSeconds"] == 10
    # Kubernetes' grpc probe takes a port number, never a port name.
    assert probe["grpc"]["port"] == _container_ports(full)["grpc"]
    # The kubelet calls grpc.health.v1 Check with this name; the gateway must answer for it.
    assert probe["grpc"]["service"] in SERVICES
    # The liveness and startup probes stay on HTTP (live != ready).
    assert full["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_grpc_readiness_without_grpc_or_on_an_old_cluster_is_refused(helm):
    on = "gateway.grpcReadinessProbe.enabled=true"
    proc = subprocess.run([helm, "template", "rel", str(CHART), "--set", on, "--set", "gateway.service.grpcPort=0"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "needs gRPC on: gateway.service.grpcPort > 0" in proc.stderr
    # grpc probes exist from Kubernetes 1.27; the chart's floor is above it, so helm refuses
    # an older cluster before any pod could get a probe its kubelet ignores.
    proc = subprocess.run([helm, "template", "rel", str(CHART), "--set", on, "--kube-version", "1.26.0"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "kubeVersion" in proc.stderr
    out = subprocess.run([helm, "template", "rel", str(CHART), "--set", on, "--kube-version", K8S_VERSIONS[0]],
                         capture_output=True, text=True, check=True).stdout
    assert "grpc:\n              port: 8001" in out  # rendered at the floor itself


def test_the_triton_service_offers_grpc_for_a_grpc_endpoint(helm):
    """values.yaml documents forwarding to Triton over gRPC with a grpc://SERVICE:8001 endpoint."""
    docs = render(helm, sets=("triton.enabled=true", "triton.routeGateway=false",
                              "gateway.config.runtime.kind=triton",
                              "gateway.config.runtime.triton.endpoints={grpc://rel-tunegate-triton:8001}"))
    svc = find(docs, "Service", "-triton")
    grpc = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    (triton,) = find(docs, "Deployment", "-triton")["spec"]["template"]["spec"]["containers"]
    assert f"--grpc-port={_container_ports(triton)[grpc['targetPort']]}" in triton["args"]
    settings = json.loads(find(docs, "ConfigMap", "-gateway")["data"]["gateway.json"])
    assert settings["runtime"]["triton"]["endpoints"] == [f"grpc://{svc['metadata']['name']}:{grpc['port']}"]


def test_notes_name_both_ports(helm):
    def notes(*sets):
        cmd = [helm, "install", "rel", str(CHART), "--dry-run=client", "--namespace", "ml"]
        for s in sets:
            cmd += ["--set", s]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split("NOTES:", 1)[1]

    both = notes("gateway.service.grpcPort=9001")
    assert "HTTP/REST on port 8000, gRPC" in both and "on port 9001" in both
    assert "svc/rel-tunegate-gateway 8000:8000 8001:9001" in both and "GATEWAY_GRPC" in both
    http_only = notes("gateway.service.grpcPort=0")
    assert "gRPC is off" in http_only and "GATEWAY_GRPC" not in http_only


def test_replicas_elect_the_loop_leader_with_the_charts_lease(rendered, tmp_path, monkeypatch):
    from gateway.settings import load_settings

    docs = rendered["default"]
    lease = find(docs, "Lease", "-loop")
    assert lease["apiVersion"] == "coordination.k8s.io/v1"
    # The Role lets the replicas read and renew that Lease (what kubernetes.leaderelection's
    # LeaseLock calls: read_namespaced_lease, replace_namespaced_lease), and no other.
    rules = [r for r in find(docs, "Role")["rules"] if r["apiGroups"] == ["coordination.k8s.io"]]
    assert rules == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": [lease["metadata"]["name"]], "verbs": ["get", "update"]}]
    container = _gateway_container(docs)
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e
           and "fieldRef" in e["valueFrom"]}
    assert env["POD_NAME"] == "metadata.name" and env["TUNEGATE_LEADER__NAMESPACE"] == "metadata.namespace"
    path = tmp_path / "gateway.json"
    path.write_text(find(docs, "ConfigMap", "-gateway")["data"]["gateway.json"])
    monkeypatch.setenv("TUNEGATE_LEADER__NAMESPACE", "ml")
    settings = load_settings(path)
    assert settings.leader.backend == "kubernetes" and settings.leader.lease_name == lease["metadata"]["name"]
    assert settings.leader.namespace == "ml" and settings.workers == 1
    # More replicas than one by default: correct because every replica follows one leader.
    assert find(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
