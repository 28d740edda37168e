"""AzureML through ``azureml-mlflow``: hi-ml's AzureML logging on the current SDK.

Two modes:

* **Job mode**, inside an AzureML job: AzureML sets ``MLFLOW_TRACKING_URI=azureml://...``,
  ``MLFLOW_RUN_ID``, ``MLFLOW_TRACKING_TOKEN`` and ``AZUREML_*``. The backend attaches to
  the job's own run with the job's token, never starts a second run and never ends it:
  the job owns its status.
* **From a VM**, outside AzureML: the workspace comes from a ``config.json`` (found in the
  working directory or a parent), from the three values, or from an ``azureml://`` tracking
  URI. The token comes from the ``TokenCredential`` given, else from
  ``DefaultAzureCredential``, which never opens a browser or asks for a device code unless
  ``interactive=True``: a batch job must fail, not hang.

The writing itself is :class:`fanlog.backends.mlflow.MLflowBackend` (``log_batch`` for
metrics, params and tags; always synchronous, since AzureML does not serve MLflow's
``synchronous=False``). A throttled request (HTTP 429) raises, and the dispatcher retries
it with backoff, from the first record the server did not take.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from fanlog.backend import import_tracker, require_tracker
from fanlog.backends.mlflow import MLflowBackend, MLflowOptions
from fanlog.logger import TrackerLogger
from fanlog.record import Record, RunInfo, RunStatus

CLOUD_VARIABLE = "AZUREML_CURRENT_CLOUD"
DEFAULT_CLOUD = "AzureCloud"
CONFIG_NAME = "config.json"
WORKSPACE_PATH = (
    "/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
    "/providers/Microsoft.MachineLearningServices/workspaces/{workspace_name}"
)
_WORKSPACE_RE = re.compile(
    r"/subscriptions/(?P<subscription_id>[^/]+)/resourceGroups/(?P<resource_group>[^/]+)"
    r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<workspace_name>[^/?]+)",
    re.IGNORECASE,
)
JOB_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_TRACKING_TOKEN")
ARM_API_VERSION = "2024-04-01"
_PENDING = "azureml://pending-arm-lookup"
"""Placeholder URI until open() asks Azure Resource Manager (prepare does no network)."""


@dataclass(frozen=True)
class Workspace:
    """The three values that name an AzureML workspace."""

    subscription_id: str
    resource_group: str
    workspace_name: str

    @property
    def path(self) -> str:
        return WORKSPACE_PATH.format(**self.__dict__)


def in_azureml_job(environ: Mapping[str, str] | None = None) -> bool:
    """True inside an AzureML job: an ``azureml://`` tracking URI, a run id and a token."""
    env = os.environ if environ is None else environ
    return all(env.get(name) for name in JOB_VARIABLES) and env["MLFLOW_TRACKING_URI"].startswith(
        "azureml://"
    )


def find_workspace_config(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest ``config.json`` in `start` (default: the working directory) or a parent."""
    folder = Path(start or os.getcwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / CONFIG_NAME
        if path.is_file():
            return path
    return None


def read_workspace_config(path: str | os.PathLike[str]) -> tuple[Workspace, dict[str, Any]]:
    """The workspace named by a portal-style ``config.json``, and the whole file."""
    with open(path) as handle:
        config = json.load(handle)
    missing = [k for k in ("subscription_id", "resource_group", "workspace_name") if not config.get(k)]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)} (expected an AzureML config.json)")
    workspace = Workspace(
        str(config["subscription_id"]), str(config["resource_group"]), str(config["workspace_name"])
    )
    return workspace, config


def workspace_from_uri(tracking_uri: str) -> Workspace:
    """The workspace named in an ``azureml://`` tracking URI."""
    found = _WORKSPACE_RE.search(tracking_uri)
    if not tracking_uri.startswith("azureml://") or found is None:
        raise ValueError(
            f"not an AzureML workspace tracking URI: {tracking_uri!r} (expected azureml://<host>"
            "/mlflow/v1.0/subscriptions/<id>/resourceGroups/<rg>/providers/"
            "Microsoft.MachineLearningServices/workspaces/<name>)"
        )
    return Workspace(**found.groupdict())


def tracking_uri_for(workspace: Workspace, region: str) -> str:
    """The workspace's MLflow tracking URI in `region` (e.g. ``westeurope``)."""
    return f"azureml://{region}.api.azureml.ms/mlflow/v1.0{workspace.path}"


class AzureMLOptions(MLflowOptions):
    """MLflow's options, a workspace and a credential. ``tag`` is the run's name."""

    sets_common = {"run_name": "tag"}

    tracking_uri: str | None = Field(
        None, description="an azureml:// tracking URI (from the workspace's overview page)"
    )
    tag: str | None = Field(
        None, description="the run's display name (hi-ml's --tag); in job mode the job's name is kept"
    )
    subscription_id: str | None = Field(
        None,
        description="the workspace's subscription, with resource_group and workspace_name (instead of a URI)",
    )
    resource_group: str | None = Field(None, description="the workspace's resource group")
    workspace_name: str | None = Field(None, description="the workspace's name")
    config_path: str | os.PathLike[str] | None = Field(
        None,
        description="a config.json; by "
        "default one is looked for in the working directory and its parents when no URI and "
        "no workspace values are given",
    )
    region: str | None = Field(
        None,
        description="the workspace's region (e.g. westeurope); "
        "without it, and without a region entry in config.json, the tracking URI is looked "
        "up with Azure Resource Manager when the run opens",
    )
    credential: Any = Field(
        None,
        description="an azure.core.credentials.TokenCredential; "
        "default DefaultAzureCredential without interactive login",
    )
    interactive: bool = Field(False, description="allow an interactive browser login (never for batch jobs)")
    resource_manager: str | None = Field(
        None, description="the Azure Resource Manager endpoint (default: the cloud's)"
    )


class AzureMLBackend(MLflowBackend):
    """An MLflow backend whose store is an AzureML workspace (job mode or from a VM)."""

    name = "azureml"
    Options: ClassVar[type[AzureMLOptions]] = AzureMLOptions
    options: AzureMLOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_name = self.options.tag
        self.explicit_uri = self.options.tracking_uri
        self.region = self.options.region
        self.credential = self.options.credential
        self.job_mode = False
        self.workspace: Workspace | None = None
        self._connected = False
        """Whether open() has set up the credential for the tracking URI (once)."""

    # ------------------------------------------------------------ caller thread
    def prepare(self) -> None:
        """Decide the mode, the workspace and the tracking URI. Reads files and the
        environment; no network, and no import of Azure (the credential and azureml-mlflow
        are set up where the run opens: the delivery agent, or the dispatcher thread)."""
        # Without it, azureml-mlflow asks management.azure.com which cloud it is in.
        os.environ.setdefault(CLOUD_VARIABLE, DEFAULT_CLOUD)
        require_tracker("azureml.mlflow", "azureml")
        self.job_mode = self.explicit_uri is None and in_azureml_job()
        if self.job_mode:
            # The plugin authenticates with the job's MLFLOW_TRACKING_TOKEN by itself.
            self.tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
            self.requested_run_id = os.environ["MLFLOW_RUN_ID"]
            self.workspace = workspace_from_uri(self.tracking_uri)
            super().prepare()
            return
        self.workspace, region = self._resolve_workspace()
        self.region = self.region or region
        if self.explicit_uri is not None:
            self.tracking_uri = self.explicit_uri
        elif self.region:
            self.tracking_uri = tracking_uri_for(self.workspace, self.region)
        else:
            self.tracking_uri = _PENDING
        super().prepare()

    def handoff(self) -> dict[str, Any]:
        workspace = self.workspace.__dict__ if self.workspace is not None else None
        return {**super().handoff(), "job_mode": self.job_mode, "workspace": workspace, "region": self.region}

    def take_handoff(self, state: Mapping[str, Any]) -> None:
        os.environ.setdefault(CLOUD_VARIABLE, DEFAULT_CLOUD)
        super().take_handoff(state)
        self.job_mode = bool(state.get("job_mode"))
        workspace = state.get("workspace")
        self.workspace = Workspace(**workspace) if workspace else None
        self.region = state.get("region")

    def _resolve_workspace(self) -> tuple[Workspace, str | None]:
        if self.explicit_uri is not None:
            return workspace_from_uri(self.explicit_uri), None
        values = (self.options.subscription_id, self.options.resource_group, self.options.workspace_name)
        if all(values):
            return Workspace(*values), None  # type: ignore[arg-type]
        if any(values):
            raise ValueError("give all three of subscription_id, resource_group and workspace_name, or none")
        path = self.options.config_path or find_workspace_config()
        if path is None:
            raise FileNotFoundError(
                "AzureMLLogger: no workspace given. Pass tracking_uri, or subscription_id/"
                f"resource_group/workspace_name, or put the workspace's {CONFIG_NAME} (from the "
                "Azure portal) in the working directory or a parent"
            )
        workspace, config = read_workspace_config(path)
        region = config.get("region") or config.get("location")
        return workspace, str(region) if region else None

    def _register_credential(self, tracking_uri: str) -> None:
        """Make azureml-mlflow use our credential for this URI instead of its own default
        chain, which ends in an interactive browser and a device-code prompt."""
        from azureml.mlflow._common._cloud.cloud import _get_cloud_or_default
        from azureml.mlflow._internal.service_context_loader import _AzureMLServiceContextLoader
        from azureml.mlflow._internal.utils import ServiceContext

        assert self.workspace is not None
        if _AzureMLServiceContextLoader.has_service_context(tracking_uri):
            # MLflow caches one store per URI, holding this very context object: swap the
            # credential in place so that a store made earlier uses ours too.
            _AzureMLServiceContextLoader.get_service_context(tracking_uri)._auth = self.credential
            return
        host = tracking_uri.split("://", 1)[1].split("/", 1)[0]
        context = ServiceContext(
            host_url=f"https://{host}",
            subscription_id=self.workspace.subscription_id,
            workspace_name=self.workspace.workspace_name,
            resource_group_name=self.workspace.resource_group,
            auth=self.credential,
            cloud=_get_cloud_or_default(os.environ.get(CLOUD_VARIABLE)),
        )
        _AzureMLServiceContextLoader.add_service_context(tracking_uri, context)

    # ------------------------------------------------------------ dispatcher thread
    def open(self, run: RunInfo) -> None:
        if not self._prepared:
            self.prepare()
        import_tracker("azureml.mlflow", "azureml")
        if not self.job_mode and not self._connected:
            if self.credential is None:
                self.credential = default_credential(self.options.interactive)
            if self.tracking_uri == _PENDING or self.tracking_uri is None:
                self.tracking_uri = self._lookup_tracking_uri()
            self._register_credential(self.tracking_uri)
            self._connected = True
        super().open(run)
        if self.job_mode:
            self.owns_run = False  # the job ends its own run

    def close(self, status: RunStatus) -> None:
        if self.job_mode:
            self.owns_run = False
        super().close(status)

    def _write_one(self, record: Record) -> None:
        """Artifact kinds: azureml-mlflow's artifact repository finds its workspace (and our
        credential) through the *global* tracking URI, so point it at this workspace."""
        if self.job_mode:  # the job's environment already makes it the global URI
            super()._write_one(record)
            return
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        assert self.tracking_uri is not None  # prepare() set it
        with _use_tracking_uri(self.tracking_uri):
            super()._write_one(record)

    def _lookup_tracking_uri(self) -> str:
        """Ask Azure Resource Manager for the workspace's tracking URI (region unknown)."""
        import requests
        from azureml.mlflow._common._cloud.cloud import _get_cloud_or_default

        assert self.workspace is not None
        cloud = _get_cloud_or_default(os.environ.get(CLOUD_VARIABLE))
        base = (self.options.resource_manager or cloud.endpoints.resource_manager).rstrip("/")
        token = self.credential.get_token(f"{base}/.default").token
        response = requests.get(
            f"{base}{self.workspace.path}",
            params={"api-version": ARM_API_VERSION},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        response.raise_for_status()
        body = response.json()
        uri = (body.get("properties") or {}).get("mlFlowTrackingUri")
        if uri:
            return str(uri)
        return tracking_uri_for(self.workspace, str(body["location"]))

    def describe(self) -> str:
        mode = "job" if self.job_mode else "remote"
        name = self.workspace.workspace_name if self.workspace else "?"
        return f"azureml workspace {name} ({mode})"


def default_credential(interactive: bool = False) -> Any:
    """``DefaultAzureCredential`` (environment, workload and managed identity, Azure CLI, ...),
    with the interactive browser only when asked for: never a prompt in a batch job."""
    identity = import_tracker("azure.identity", "azureml")
    return identity.DefaultAzureCredential(exclude_interactive_browser_credential=not interactive)


class AzureMLLogger(TrackerLogger):
    """Log to an AzureML workspace, from inside an AzureML job or from any machine.

    In job mode ``experiment_name`` is ignored: the run already belongs to the job's
    experiment (``experiment_name`` is hi-ml's ``--experiment``, ``tag`` its ``--tag``).
    """

    backend_class = AzureMLBackend

    @property
    def azureml_run_id(self) -> str | None:
        """The run being written to (known once the background worker opened it)."""
        backend = self.backend
        return backend.run_id if isinstance(backend, AzureMLBackend) else None
