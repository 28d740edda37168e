"""AzureMLLogger with the real azureml-mlflow plugin, against a stand-in workspace on loopback.

The workspace is a real ``mlflow server`` on 127.0.0.1 behind :class:`WorkspaceProxy`
(TLS with a self-signed certificate, bearer-token check on every request; see
tests/support/azure_proxy.py). What the plugin stored is read back with a plain
``MlflowClient`` talking to the MLflow server directly. The socket layer is patched so that
any attempt to reach an address other than 127.0.0.1 fails and is recorded.

Mocked, because it cannot exist here: Entra ID (a test ``TokenCredential`` issues the
token) and the AzureML job service (a subprocess gets the environment a job would get).
A real workspace is used only by ``test_live_workspace`` when ``FANLOG_AZUREML_CONFIG``
names its config.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azureml.mlflow")
mlflow = pytest.importorskip("mlflow")
from azure.core.credentials import AccessToken  # noqa: E402

from fanlog.backends.azureml import (  # noqa: E402
    AzureMLBackend,
    AzureMLLogger,
    Workspace,
    default_credential,
    find_workspace_config,
    in_azureml_job,
    read_workspace_config,
    tracking_uri_for,
    workspace_from_uri,
)
from support.azure_proxy import (  # noqa: E402
    WorkspaceProxy,
    make_self_signed_cert,
    refuse_non_loopback,
    workspace_path,
)
from support.mlflow_server import QUIET_ENV, MlflowServer, start_mlflow_server  # noqa: E402

TESTS = Path(__file__).resolve().parent
SUB, RG, WS = "00000000-1111-2222-3333-444444444444", "rg-test", "ws-test"
VM_TOKEN = "vm-token-from-entra"
JOB_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_TRACKING_TOKEN",
    "AZUREML_RUN_ID",
    "AZUREML_CURRENT_CLOUD",
)


class StaticCredential:
    """A TokenCredential standing in for Entra ID: one fixed token, and a note of each call."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


def job_token() -> str:
    """A JWT like the one AzureML gives a job (the plugin reads its expiry)."""
    import jwt

    return str(jwt.encode({"exp": int(time.time()) + 3600, "sub": "job"}, "k" * 32, "HS256"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    os.environ.update(QUIET_ENV)
    # Generous: on a busy shared machine the first start (database migrations) is slow.
    started = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), timeout=300)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def proxy(server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceProxy]:
    cert, key = make_self_signed_cert(tmp_path_factory.mktemp("tls"))
    front = WorkspaceProxy(server.url, cert, key, workspace_path(SUB, RG, WS), tokens={VM_TOKEN})
    yield front.start()
    front.stop()


@pytest.fixture
def loopback_only(proxy: WorkspaceProxy, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The TLS trust and a clean environment; every connection beyond 127.0.0.1 refused."""
    for name in JOB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(proxy.cert))
    proxy.seen.clear()
    return refuse_non_loopback(monkeypatch.setattr)


def reader(server: MlflowServer) -> Any:
    return mlflow.tracking.MlflowClient(tracking_uri=server.url)


def history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:fanlog:RuntimeWarning")  # the failures it provokes
def test_remote_mode_logs_every_rest_kind_with_our_credential(
    server: MlflowServer, proxy: WorkspaceProxy, loopback_only: list[str], tmp_path: Path
) -> None:
    """From a VM: explicit azureml:// URI, our TokenCredential, metrics through log_batch,
    a throttled (429) request retried with backoff, the run FINISHED by us."""
    credential = StaticCredential(VM_TOKEN)
    proxy.throttle_log_batch = 1
    logger = AzureMLLogger(
        experiment_name="remote-exp",
        tag="display-name",
        tracking_uri=proxy.tracking_uri,
        credential=credential,
        savedir=str(tmp_path / "logs"),
        tags={"team": "fanlog"},
    )
    with logger.start_logging(rank=0):
        assert os.environ["AZUREML_CURRENT_CLOUD"] == "AzureCloud"
        for step in range(5):
            logger.log(1.0 / (step + 1), "train/loss", step=step)
        logger.save_hyperparameters({"lr": 0.001, "model": {"depth": 4}})
        logger.log("fast", "variant", kind="tag")
        logger.log({"source": "/data/train.csv", "num_rows": 10}, "train", kind="dataset")
        assert logger.flush(timeout=120)
        run_id = logger.azureml_run_id
        assert isinstance(logger.backend, AzureMLBackend) and not logger.backend.job_mode
    assert logger.delivery_errors().get("azureml", []) != []  # the 429 was seen and retried

    client = reader(server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "display-name"
    assert client.get_experiment(run.info.experiment_id).name == "remote-exp"
    assert history(client, run_id, "train/loss") == [(s, 1.0 / (s + 1)) for s in range(5)]
    assert run.data.params == {"lr": "0.001", "model/depth": "4"}
    assert run.data.tags["variant"] == "fast" and run.data.tags["team"] == "fanlog"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["train"]

    assert credential.scopes and all(
        s == ("https://management.azure.com/.default",) for s in credential.scopes
    )
    assert proxy.seen and all(s.authorized for s in proxy.seen)
    assert [s.status for s in proxy.seen if "log-batch" in s.path].count(429) == 1
    assert not any("log-metric" in s.path for s in proxy.seen)  # batched, never per metric
    assert loopback_only == []


@pytest.mark.slow
def test_workspace_from_config_json_and_arm_lookup(
    server: MlflowServer,
    proxy: WorkspaceProxy,
    loopback_only: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """config.json in a parent directory, no region: the tracking URI comes from ARM
    (served by the proxy), with the same credential."""
    (tmp_path / "config.json").write_text(
        json.dumps({"subscription_id": SUB, "resource_group": RG, "workspace_name": WS})
    )
    nested = tmp_path / "project" / "src"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    credential = StaticCredential(VM_TOKEN)
    logger = AzureMLLogger(
        experiment_name="config-exp",
        credential=credential,
        savedir=str(tmp_path / "logs"),
        resource_manager=proxy.arm_url,
    )
    with logger.start_logging(rank=0):
        logger.log(0.5, "acc", step=3)
        assert logger.flush(timeout=120)
        run_id = logger.azureml_run_id
    assert logger.delivery_errors() == {}
    assert logger.backend.tracking_uri == proxy.tracking_uri
    assert (f"{proxy.arm_url}/.default",) in credential.scopes
    client = reader(server)
    assert history(client, run_id, "acc") == [(3, 0.5)]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert loopback_only == []


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:fanlog:RuntimeWarning")  # the failures it provokes
def test_request_without_the_token_is_refused(
    server: MlflowServer, proxy: WorkspaceProxy, loopback_only: list[str], tmp_path: Path
) -> None:
    """The proxy really checks the header: a wrong token delivers nothing."""
    logger = AzureMLLogger(
        tracking_uri=proxy.tracking_uri,
        credential=StaticCredential("not-the-token"),
        savedir=str(tmp_path / "logs"),
        retry_initial=0.1,
        retry_max=0.2,
        close_timeout=2,
    )
    logger.create_logger_context(rank=0)
    logger.log(1.0, "loss", step=0)
    assert logger.flush(timeout=3) is False
    errors = logger.delivery_errors()["azureml"]
    logger.destroy_logger_context()
    assert any("401" in e or "bearer" in e.lower() for e in errors), errors
    assert proxy.seen and not any(s.authorized for s in proxy.seen)
    assert loopback_only == []


CHILD = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    from support.azure_proxy import refuse_non_loopback
    refused = refuse_non_loopback()
    from fanlog.backends.azureml import AzureMLLogger

    logger = AzureMLLogger(savedir=sys.argv[1], experiment_name="ignored-in-job-mode")
    offset = 100.0 * int(os.environ.get("RANK", "0"))
    with logger.start_logging():
        for step in range(4):
            logger.log(offset + step, "train/loss", step=step)
        logger.log("job-param", "origin", kind="param")
        logger.flush(timeout=120)
    backend = logger.backend
    print(json.dumps({{
        "refused": refused, "errors": logger.delivery_errors(),
        "job_mode": backend.job_mode if backend is not None else None,
        "run_id": backend.run_id if backend is not None else None,
        "cloud": os.environ.get("AZUREML_CURRENT_CLOUD"),
    }}))
    """
)


@pytest.mark.slow
def test_job_mode_attaches_to_the_jobs_run_and_leaves_it_running(
    server: MlflowServer, proxy: WorkspaceProxy, tmp_path: Path
) -> None:
    """Two ranks start as an AzureML job would (job env, TLS, job token); rank 0 logs into
    the pre-created run, rank 1 (not in log_on_workers) sends nothing; the run stays RUNNING."""
    client = reader(server)
    experiment_id = client.create_experiment("job-exp")
    run_id = client.create_run(experiment_id, run_name="the-job").info.run_id
    token = job_token()
    proxy.tokens.add(token)
    proxy.seen.clear()
    script = tmp_path / "job.py"
    script.write_text(CHILD.format(tests=str(TESTS)))
    env = {k: v for k, v in os.environ.items() if k not in JOB_VARIABLES}
    env.update(QUIET_ENV)
    env.update(
        {
            "MLFLOW_TRACKING_URI": proxy.tracking_uri,
            "MLFLOW_RUN_ID": run_id,
            "MLFLOW_EXPERIMENT_ID": experiment_id,
            "MLFLOW_EXPERIMENT_NAME": "job-exp",
            "MLFLOW_TRACKING_TOKEN": token,
            "AZUREML_RUN_ID": run_id,
            "AZUREML_ARM_SUBSCRIPTION": SUB,
            "AZUREML_ARM_RESOURCEGROUP": RG,
            "AZUREML_ARM_WORKSPACE_NAME": WS,
            "AZUREML_ARM_PROJECT_NAME": "job-exp",
            "REQUESTS_CA_BUNDLE": str(proxy.cert),
            "WORLD_SIZE": "2",
        }
    )
    children = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"logs-{rank}")],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=240)
        assert child.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    rank0, rank1 = results

    assert rank0["job_mode"] is True and rank0["run_id"] == run_id
    assert rank0["errors"] == {} and rank0["cloud"] == "AzureCloud"
    assert rank1["job_mode"] is None  # log_on_workers=0: no backend on rank 1
    assert rank0["refused"] == [] and rank1["refused"] == []

    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert history(client, run_id, "train/loss") == [(s, float(s)) for s in range(4)]
    assert run.data.params == {"origin": "job-param"}
    assert len(client.search_runs([experiment_id])) == 1  # no second run
    assert proxy.seen and all(s.authorized for s in proxy.seen)


@pytest.mark.slow
def test_default_credential_fails_fast_without_a_prompt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No Azure login available: DefaultAzureCredential gives up quickly (nothing beyond
    127.0.0.1 is reachable), and the chain holds no browser or device-code credential."""
    from azure.core.exceptions import ClientAuthenticationError

    refused = refuse_non_loopback(monkeypatch.setattr)
    for name in list(os.environ):
        if name.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no Azure CLI or MSAL token cache
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no az, azd or pwsh
    credential = default_credential()
    names = {type(c).__name__ for c in credential.credentials}
    assert "InteractiveBrowserCredential" not in names and "DeviceCodeCredential" not in names
    started = time.monotonic()
    with pytest.raises(ClientAuthenticationError):
        credential.get_token("https://management.azure.com/.default")
    assert time.monotonic() - started < 60
    assert not any("127.0.0.1" in r for r in refused)


def test_workspace_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = Workspace(SUB, RG, WS)
    uri = tracking_uri_for(workspace, "westeurope")
    assert uri.startswith("azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/")
    assert workspace_from_uri(uri) == workspace
    with pytest.raises(ValueError, match="not an AzureML workspace"):
        workspace_from_uri("http://127.0.0.1:5000")
    (tmp_path / "config.json").write_text(json.dumps({"subscription_id": SUB}))
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_workspace_config(deep) == tmp_path / "config.json"
    with pytest.raises(ValueError, match="missing resource_group, workspace_name"):
        read_workspace_config(tmp_path / "config.json")
    monkeypatch.chdir(deep)
    monkeypatch.delenv("AZUREML_CURRENT_CLOUD", raising=False)  # prepare() sets it
    backend = AzureMLBackend(subscription_id=SUB)
    with pytest.raises(ValueError, match="all three"):
        backend.prepare()
    job = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_RUN_ID": "r", "MLFLOW_TRACKING_TOKEN": "t"}
    assert in_azureml_job(job)
    assert not in_azureml_job({**job, "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert not in_azureml_job({k: v for k, v in job.items() if k != "MLFLOW_TRACKING_TOKEN"})


@pytest.mark.slow
def test_importing_the_backend_imports_no_azure() -> None:
    code = (
        "import sys, fanlog.backends.azureml; "
        "print([m for m in sys.modules if m.split('.')[0] in ('azure', 'azureml', 'mlflow', 'torch')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.azure_live
@pytest.mark.skipif(
    not os.environ.get("FANLOG_AZUREML_CONFIG"),
    reason="needs a real workspace: FANLOG_AZUREML_CONFIG=<path of config.json>",
)
def test_live_workspace(tmp_path: Path) -> None:  # pragma: no cover - needs Azure
    """Against a real workspace, with whatever DefaultAzureCredential finds (az login, ...)."""
    logger = AzureMLLogger(
        experiment_name="fanlog-live-test",
        tag=f"live-{int(time.time())}",
        config_path=os.environ["FANLOG_AZUREML_CONFIG"],
        savedir=str(tmp_path),
    )
    with logger.start_logging(rank=0):
        logger.log(0.25, "live/metric", step=1)
        logger.log("yes", "live_param", kind="param")
        assert logger.flush(timeout=300)
        run_id = logger.azureml_run_id
    assert logger.delivery_errors() == {}
    client = mlflow.tracking.MlflowClient(tracking_uri=logger.backend.tracking_uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "live/metric")] == [(1, 0.25)]
    assert client.get_run(run_id).data.params["live_param"] == "yes"
