"""Kubernetes manifests: valid against the API schema, and consistent with the worker's flags."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.configuration import load_settings
from worker.models import EXIT_ABORTED, EXIT_USAGE
from worker.parser import build_parser
from worker.settings import Settings

K8S = Path(__file__).resolve().parent.parent / "config" / "k8s"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return data


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def settings_of(container: dict[str, Any]) -> Settings:
    args = build_parser().parse_args(container["args"])
    flags = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return load_settings(
        {**flags, **{k.removeprefix("DCS_CLEANUP_").lower(): v for k, v in env.items()}}
    )


def test_manifests_validate_strictly() -> None:
    """kubernetes-validate --strict accepts every manifest."""
    exe = shutil.which("kubernetes-validate")
    assert exe
    files = sorted(str(p) for p in K8S.glob("*.yaml"))
    assert len(files) == 4
    result = subprocess.run([exe, "--strict", *files], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["cronjob.yaml", "indexed-job.yaml", "consumer-deployment.yaml"])
def test_workloads_are_locked_down_and_match_the_worker(name: str) -> None:
    """Non-root, read-only root filesystem, credentials from the Secret, valid worker flags, and
    a termination grace period above --grace so in-flight requests can finish."""
    doc = load(name)
    pod = pod_spec(doc)
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    for each in [container, *pod.get("initContainers", [])]:
        assert each["securityContext"]["readOnlyRootFilesystem"] is True
        assert each["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"secretRef": {"name": "dcs-cleanup-credentials"}} in each["envFrom"]
        assert {m["mountPath"] for m in each["volumeMounts"]} >= {"/tmp"}
    settings = settings_of(container)
    assert pod["terminationGracePeriodSeconds"] > settings.grace
    if doc["kind"] == "CronJob":
        assert doc["spec"]["concurrencyPolicy"] == "Forbid"
        job = doc["spec"]["jobTemplate"]["spec"]
        assert job["backoffLimit"] >= 1
        assert settings.deadline_in() is not None
        assert job["activeDeadlineSeconds"] > settings.deadline_in() + settings.grace  # type: ignore[operator]
    if doc["kind"] == "Job":
        assert doc["spec"]["completionMode"] == "Indexed"
        assert settings.shard_count == doc["spec"]["completions"]
        assert settings.shared_rate_key
    if doc["kind"] == "Deployment":
        assert settings.queue
        assert not settings.until_empty
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["ports"][0]["containerPort"] == settings.health_port


@pytest.mark.parametrize("name", ["cronjob.yaml", "indexed-job.yaml"])
def test_a_job_does_not_retry_an_exit_that_a_retry_would_repeat(name: str) -> None:
    """A Job retried every failed pod (backoffLimit 2), whatever its exit: after a 401 (exit 3)
    each retry sent more refused signatures, and Huawei locks an AK/SK after five; a run
    stopped by --max-deletes (exit 3) deleted as many again in each retry, up to three times
    the guard. The pod failure policy now fails the Job at once on exit 2 (usage) and 3
    (aborted), from either container, and leaves out of the count a pod lost to a disruption
    (a node drained); other exits (4 interrupted, 1 some tasks failed) are retried."""
    doc = load(name)
    job = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # the policy requires it
    rules = job["podFailurePolicy"]["rules"]
    [fail] = [rule for rule in rules if rule["action"] == "FailJob"]
    assert "containerName" not in fail["onExitCodes"]  # the list init container's exits too
    assert fail["onExitCodes"]["operator"] == "In"
    assert sorted(fail["onExitCodes"]["values"]) == [EXIT_USAGE, EXIT_ABORTED]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules


def test_the_cronjob_lists_the_night_s_tasks_into_the_file_its_run_deletes() -> None:
    """The nightly purge finds its own work: an init container runs ``list`` (valid flags,
    tasks older than some days) whole into a file on a volume the cleanup container mounts,
    and ``run --input`` reads that very file; the pod's deadline leaves room for both."""
    pod = pod_spec(load("cronjob.yaml"))
    (lister,) = pod["initContainers"]
    (cleanup,) = pod["containers"]
    listed = build_parser().parse_args(lister["args"])
    assert listed.command == "list"
    assert listed.older_than_days is not None
    output = Path(listed.output)
    assert settings_of(cleanup).input == str(output)

    def volume(container: dict[str, Any], path: Path) -> str:
        mounts = container["volumeMounts"]
        (name,) = [str(m["name"]) for m in mounts if path.is_relative_to(m["mountPath"])]
        return name

    assert volume(lister, output) == volume(cleanup, output)
    assert {v["name"] for v in pod["volumes"] if "emptyDir" in v} >= {volume(lister, output)}


def test_the_cronjob_remembers_refused_credentials_on_its_persistent_volume() -> None:
    """The CronJob has no Redis, so its list and run sent a wrong SK once a night (Huawei locks
    an AK/SK after five). Both containers now name one --refusal-file on the volume that
    outlives the pod, the journal's, so a refusal is sent once."""
    pod = pod_spec(load("cronjob.yaml"))
    (lister,) = pod["initContainers"]
    (cleanup,) = pod["containers"]
    files = {settings_of(c).refusal_file for c in (lister, cleanup)}
    (path,) = files
    assert path is not None
    journal = settings_of(cleanup).journal
    assert journal is not None
    assert path.parent == journal.parent
    claims = {v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    for container in (lister, cleanup):
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        mount = mounts[str(path.parent)]
        assert mount["name"] in claims
        assert not mount.get("readOnly", False)


def test_the_cronjob_s_volume_holds_a_week_of_tasks_not_every_night_s() -> None:
    """The nightly run's journal kept every task it ever deleted, and it appended every
    night's outcome lines to one file, both on the persistent volume: after months it filled.
    The journal now forgets what ended more than a week before each run (longer than one
    night's resumptions need: a task deleted earlier cannot be in tonight's list), and no
    outcomes file grows there (``report --journal`` renders the week's)."""
    (cleanup,) = pod_spec(load("cronjob.yaml"))["containers"]
    settings = settings_of(cleanup)
    assert settings.journal is not None
    assert settings.retention_at_start_s() == 7 * 86400
    assert settings.outcomes is None
