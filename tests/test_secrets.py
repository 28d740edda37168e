"""Secrets never leave the process: redacted before the journal and before every tracker.

One run logs a hyperparameter dict holding a W&B API key and an MLflow token to a real
`mlflow server`, TensorBoard event files, an offline W&B run and the journal at once;
then every byte those trackers stored is searched for the raw values. No mocks.
"""

from __future__ import annotations

import glob
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fanlog import LoggersCollection, read_run, secrets
from fanlog.backends.journal import JournalLogger
from fanlog.secrets import REDACTED, _allowed, allow_keys

WANDB_KEY = "wandbkey" + "0123456789abcdef" * 2 + "TESTONLY"
MLFLOW_TOKEN = "dapi" + "f00dfeedc0ffee42" * 2 + "TESTONLY"
PASSWORD = "pw-Hunter2-TESTONLY"
SECRETS = [WANDB_KEY, MLFLOW_TOKEN, PASSWORD]

HYPERPARAMETERS = {
    "lr": 0.01,
    "wandb": {"api_key": WANDB_KEY, "project": "p"},
    "MLFLOW_TRACKING_TOKEN": MLFLOW_TOKEN,
    "db": {"connection": {"Password": PASSWORD}},
}


def files_containing(root: Path, needles: list[str]) -> list[str]:
    """Every file under `root` whose bytes contain one of `needles`."""
    found = []
    encoded = [n.encode() for n in needles]
    for path in glob.glob(str(root / "**" / "*"), recursive=True):
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, "rb") as handle:
                data = handle.read()
            if any(n in data for n in encoded):
                found.append(path)
    return found


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Offline W&B with every directory under tmp: nothing leaves the machine."""
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    yield


def wait_for_wandb_exit(savedir: Path, timeout: float = 60) -> str:
    from support.wandb_log import read_transaction_log

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        paths = glob.glob(str(savedir / "wandb" / "**" / "run-*.wandb"), recursive=True)
        for path in paths:
            try:
                records = read_transaction_log(path)
            except ValueError:
                continue
            if any(r.WhichOneof("record_type") == "exit" for r in records):
                return path
        time.sleep(0.1)
    raise AssertionError("the offline W&B run never finished writing")


@pytest.mark.slow
def test_secret_hyperparameters_reach_no_tracker_and_not_the_journal(
    tmp_path: Path, mlflow_server: Any, offline_wandb: None
) -> None:
    from fanlog.backends.mlflow import MLflowLogger
    from fanlog.backends.tensorboard import TensorBoardLogger
    from fanlog.backends.wandb import WandBLogger

    savedir = tmp_path / "sd"
    logger = LoggersCollection(
        [
            JournalLogger(savedir=str(savedir)),
            MLflowLogger(savedir=str(savedir), tracking_uri=mlflow_server.url, experiment_name="secrets"),
            TensorBoardLogger(savedir=str(savedir)),
            WandBLogger(
                savedir=str(savedir), mode="offline", settings={"x_disable_stats": True, "console": "off"}
            ),
        ],
        savedir=str(savedir),
    )
    logger.create_logger_context(rank=0)
    logger.save_hyperparameters(HYPERPARAMETERS)
    logger.log(HYPERPARAMETERS, "config.json", kind="dict")  # the whole config, as a document
    logger.log(0.5, "loss", step=0)
    assert logger.flush(timeout=120)
    mlflow_member = logger.loggers[1]
    assert isinstance(mlflow_member, MLflowLogger)
    run_id = mlflow_member.mlflow_run_id
    journal_path = logger.journal_path
    assert logger.destroy_logger_context()
    wait_for_wandb_exit(savedir)

    # The records did arrive (so the search below is not vacuous), redacted.
    assert journal_path is not None
    params = read_run(journal_path).params
    assert params["wandb/api_key"] == REDACTED and params["MLFLOW_TRACKING_TOKEN"] == REDACTED
    assert params["db/connection/Password"] == REDACTED and params["lr"] == 0.01
    import mlflow

    stored = mlflow.MlflowClient(tracking_uri=mlflow_server.url).get_run(run_id).data.params
    assert stored["wandb/api_key"] == REDACTED and stored["wandb/project"] == "p"

    # ... and no raw secret anywhere: journal, TensorBoard, W&B offline files, MLflow's store.
    assert glob.glob(str(savedir / "tensorboard" / "**" / "events.out.*"), recursive=True)
    assert glob.glob(str(savedir / "wandb" / "**" / "*.wandb"), recursive=True)
    assert files_containing(tmp_path, SECRETS) == []
    assert files_containing(Path(mlflow_server.workdir), SECRETS) == []


def test_allow_list_lets_a_named_key_through(tmp_path: Path) -> None:
    logger = JournalLogger(savedir=str(tmp_path / "sd"))
    allow_keys(["max_token_count"])
    try:
        logger.create_logger_context(rank=0)
        logger.save_hyperparameters({"max_token_count": 512, "hf_token": "hf_TESTONLY"})
        logger.destroy_logger_context()
    finally:
        _allowed.discard("max_token_count")
    assert logger.journal_path is not None
    params = read_run(logger.journal_path).params
    assert params == {"max_token_count": 512, "hf_token": REDACTED}
    assert files_containing(tmp_path, ["hf_TESTONLY"]) == []


def test_journal_and_save_dir_are_owner_only(tmp_path: Path) -> None:
    savedir = tmp_path / "new" / "sd"
    old = os.umask(0o022)  # a typical umask: group/other would get read access by default
    try:
        logger = JournalLogger(savedir=str(savedir), job_id="perm")
        logger.create_logger_context(rank=0)
        logger.log(1.0, "x")
        logger.destroy_logger_context()
    finally:
        os.umask(old)
    journal = Path(logger.journal_path or "")
    private = [savedir, savedir / "runs", savedir / "runs" / "perm", journal.parent, journal]
    for path in private:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600


# ------------------------------------------------------------------ every class of secret
@dataclass
class Leak:
    """One way a secret reaches log(): `secrets` must vanish, `kept` must stay."""

    id: str
    item: Any
    identifier: str = "value"
    kind: str = "param"
    secrets: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


GH_TOKEN = "ghp_" + "Zq8" * 12  # 36 characters after the prefix, as GitHub's are
WANDB_HEX = "9e107d9d372bb6826bd81d3542a419d6e107d9d3"
JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ0ZXN0LW9ubHkiLCJpYXQiOjE3MDAwMDAwMDB9."
    "c2lnbmF0dXJlLXRlc3Qtb25seQ"
)

LEAKS = [
    # URL credentials, in every kind that carries text
    Leak(
        "url-mysql-param",
        "mysql://admin:S3cr3tUrlPw@db.internal:3306/app",
        "db_url",
        secrets=("S3cr3tUrlPw",),
        kept=("db.internal:3306/app", "admin"),
    ),
    Leak(
        "url-amqp-text",
        "broker at amqp://guest:RabbitPw9x@mq.local/vhost is up",
        "notes",
        "text",
        secrets=("RabbitPw9x",),
        kept=("mq.local/vhost",),
    ),
    Leak(
        "url-no-user-tag",
        "redis://:RedisOnlyPw77@cache:6379/0",
        "cache",
        "tag",
        secrets=("RedisOnlyPw77",),
        kept=("cache:6379",),
    ),
    Leak(
        "url-token-as-user",
        "https://hfUserPartToken0987654321@huggingface.co/org/repo",
        "repo",
        secrets=("hfUserPartToken0987654321",),
        kept=("huggingface.co/org/repo",),
    ),
    Leak(
        "url-in-dict",
        {"store": {"uri": "https://deployer:GlDeployPw55@gitlab.example.org/g/r.git"}},
        "cfg",
        "dict",
        secrets=("GlDeployPw55",),
        kept=("gitlab.example.org",),
    ),
    # HTTP authorization, as text and nested
    Leak(
        "auth-header-text",
        "curl -H 'Authorization: Bearer opaqueTok.en-42xyz' https://api.x",
        "cmd",
        "text",
        secrets=("opaqueTok.en-42xyz",),
        kept=("curl -H", "https://api.x"),
    ),
    Leak(
        "auth-basic-text",
        "proxy-authorization: Basic QWxhZGRpbjpPcGVuU2VzYW1lOTk=",
        "hdr",
        "text",
        secrets=("QWxhZGRpbjpPcGVuU2VzYW1lOTk",),
    ),
    Leak(
        "auth-nested-lowercase",
        {"request": {"headers": {"authorization": "Token tkn-998877aa"}}},
        "req",
        "dict",
        secrets=("tkn-998877aa",),
        kept=("request",),
    ),
    Leak(
        "auth-header-pairs",
        {"headers": [("Authorization", "Bearer pairBearer-123")]},
        "http",
        "param",
        secrets=("pairBearer-123",),
    ),
    # keys that name secrets
    *[
        Leak(
            f"key-{key}",
            {key: f"KeyedValue-{n}", "region": "eu-west-1"},
            "cloud",
            "dict",
            secrets=(f"KeyedValue-{n}",),
            kept=("eu-west-1",),
        )
        for n, key in enumerate(
            [
                "secret_access_key",
                "access_key",
                "pwd",
                "passphrase",
                "auth",
                "sas",
                "client_secret",
                "aws_session_token",
                "DB_PASS",
                "smtpPassword",
                "x-api-key",
                "sas_url",
                "SessionToken",
                "github_token",
                "connection_string",
                "Cookie",
                "private_key",
                "signature",
            ]
        )
    ],
    Leak(
        "key-identifier-param",
        "plainvalue-but-secret-key",
        "storage/account_key",
        secrets=("plainvalue-but-secret-key",),
    ),
    Leak(
        "key-identifier-text",
        "-----nothing shaped like a secret-----",
        "vault.passphrase",
        "text",
        secrets=("nothing shaped like a secret",),
    ),
    # Azure connection strings
    Leak(
        "azure-account-key",
        "DefaultEndpointsProtocol=https;AccountName=acct;"
        "AccountKey=Zm9vYmFyYmF6cXV4+/Azure==;EndpointSuffix=core.windows.net",
        "storage",
        secrets=("Zm9vYmFyYmF6cXV4+/Azure",),
        kept=("AccountName=acct", "core.windows.net"),
    ),
    Leak(
        "azure-service-bus",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=SbKeyValue123+=",
        "bus",
        "text",
        secrets=("SbKeyValue123",),
        kept=("SharedAccessKeyName=send",),
    ),
    Leak(
        "azure-sas",
        "BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature="
        "sv=2022-11-02&sig=SigValue%2Bxyz%3D",
        "blob",
        "tag",
        secrets=("SigValue%2Bxyz%3D",),
    ),
    Leak(
        "azure-sas-url",
        "https://a.blob.core.windows.net/c/d.bin?sv=2022&se=2030&sig=UrlSig%2Fabc",
        "data_url",
        secrets=("UrlSig%2Fabc",),
        kept=("a.blob.core.windows.net/c/d.bin",),
    ),
    # command lines
    Leak(
        "argv-flag-value",
        ["train.py", "--wandb-api-key", "ArgvKey123", "--epochs", "3"],
        "argv",
        secrets=("ArgvKey123",),
        kept=("--epochs",),
    ),
    Leak("argv-flag-equals", ("train.py", "--db-password=ArgvPw456"), "argv", secrets=("ArgvPw456",)),
    Leak(
        "argv-in-dict",
        {"cmd": ["--token", "ArgvTok789", "-p", "8080"]},
        "launch",
        "dict",
        secrets=("ArgvTok789",),
        kept=("8080",),
    ),  # -p is not redacted (see the docs)
    Leak(
        "argv-in-text",
        "python train.py --hf-token hfArgvTok000 --epochs 3",
        "cmdline",
        "text",
        secrets=("hfArgvTok000",),
        kept=("--epochs 3",),
    ),
    Leak("pairs", [("passwd", "PairPw1"), ("user", "bob")], "login", secrets=("PairPw1",), kept=("bob",)),
    Leak("pairs-tuple-of-tuples", (("api_key", "PairKey2"),), "keys", "dict_value", secrets=("PairKey2",)),
    # assignments inside free text
    Leak(
        "env-assignment",
        "HF_TOKEN=envTok111 python run.py",
        "launch_cmd",
        "text",
        secrets=("envTok111",),
        kept=("python run.py",),
    ),
    Leak(
        "env-export-quoted",
        "export GITHUB_TOKEN='env tok 222'\nexport LR=0.1",
        "env",
        "text",
        secrets=("env tok 222",),
        kept=("LR=0.1",),
    ),
    Leak(
        "env-yaml",
        "mlflow:\n  tracking_password: envPw444\n  uri: http://h",
        "config.yaml",
        "text",
        secrets=("envPw444",),
        kept=("uri: http://h",),
    ),
    Leak(
        "env-json-in-text",
        '{"client_secret": "jsonSecret 555", "id": 7}',
        "blob",
        "text",
        secrets=("jsonSecret 555",),
        kept=('"id": 7',),
    ),
    # token formats
    Leak(
        "github-token", f"pushed with {GH_TOKEN}", "note", "text", secrets=(GH_TOKEN,), kept=("pushed with",)
    ),
    Leak(
        "aws-access-key-id",
        "AKIAZ7TESTONLYKEY123 in us-east-1",
        "aws",
        "tag",
        secrets=("AKIAZ7TESTONLYKEY123",),
        kept=("us-east-1",),
    ),
    Leak("jwt", f"id token {JWT}", "oidc", "text", secrets=(JWT[:40],)),
    Leak("slack", "alerts via xoxp-1234567890-abcdefGHIJKL", "alerts", secrets=("xoxp-1234567890",)),
    Leak("openai", "sk-proj-TESTONLYabcdefghijklmnop0123", "llm", secrets=("TESTONLYabcdefghij",)),
    Leak("wandb-login", f"ran `wandb login {WANDB_HEX}` first", "setup", "text", secrets=(WANDB_HEX,)),
    # options of log() and other kinds
    Leak(
        "options",
        0.5,
        "loss",
        "metric",
        secrets=("OptPw999", "optTok-abc123"),
        kept=("warmup",),
        options={"note": "warmup", "password": "OptPw999", "src": "Bearer optTok-abc123"},
    ),
    Leak(
        "dataset-key",
        {"path": "s3://bucket/train", "token": "DsTok-321"},
        "train",
        "dataset",
        secrets=("DsTok-321",),
        kept=("s3://bucket/train",),
    ),
    Leak(
        "dataset-url",
        "postgres://reader:DsUrlPw@warehouse/analytics",
        "eval",
        "dataset",
        secrets=("DsUrlPw",),
        kept=("warehouse/analytics",),
    ),
    Leak(
        "dataset-secret-identifier",
        {"source": "HiddenSrc-31", "rows": "10"},
        "hf_token",
        "dataset",
        secrets=("HiddenSrc-31",),
    ),
    Leak("prov-documents", {"upload": "https://u:ProvPw@h/x"}, "docs", "prov_documents", secrets=("ProvPw",)),
    # shapes found by the review of issue 12 (D2)
    Leak(
        "netrc-line",
        "machine github.com login bob password NetrcPw1",
        ".netrc",
        "text",
        secrets=("NetrcPw1",),
        kept=("machine github.com login bob",),
    ),
    Leak(
        "netrc-lines",
        "machine h.example\n  login bob\n  password NetrcPw2\n",
        "netrc",
        "text",
        secrets=("NetrcPw2",),
        kept=("login bob",),
    ),
    Leak(
        "env-service-keys",
        {
            "KAGGLE_KEY": "SvcKey1",
            "OPENAI_KEY": "SvcKey2",
            "COHERE_KEY": "SvcKey3",
            "LICENSE_KEY": "SvcKey4",
            "S3_KEY": "SvcKey5",
            "HOME": "/home/u",
        },
        "env",
        "dict",
        secrets=("SvcKey1", "SvcKey2", "SvcKey3", "SvcKey4", "SvcKey5"),
        kept=("/home/u",),
    ),
    Leak(
        "pairs-as-lists",
        {
            "env": [
                ["AWS_SECRET_ACCESS_KEY", "ListPair1"],
                ["password", "ListPair2"],
                ["region", "eu-north-1"],
            ]
        },
        "cfg",
        "param",
        secrets=("ListPair1", "ListPair2"),
        kept=("eu-north-1",),
    ),
    Leak(
        "triple",
        [("password", "=", "TriplePw3"), ("user", "=", "ann")],
        "creds",
        "param",
        secrets=("TriplePw3",),
        kept=("ann",),
    ),
    Leak(
        "query-key",
        "https://maps.example.com/api/geocode?key=QueryKey77abc&q=paris",
        "geo",
        "text",
        secrets=("QueryKey77abc",),
        kept=("q=paris",),
    ),
    Leak(
        "mysql-glued",
        "mysql -u root -pMysqlPw8 analytics",
        "restore",
        "text",
        secrets=("MysqlPw8",),
        kept=("analytics",),
    ),
    Leak(
        "curl-user",
        "curl -u bob:CurlPw9 https://api.example.com/v1",
        "fetch",
        "text",
        secrets=("CurlPw9",),
        kept=("https://api.example.com/v1",),
    ),
    Leak(
        "json-escaped-quote",
        '{"password": "a\\"EscQuotePw", "id": 3}',
        "blob2",
        "text",
        secrets=("EscQuotePw",),
        kept=('"id": 3',),
    ),
    Leak(
        "prose-password",
        "reminder: the password is ProsePw10 for now",
        "todo",
        "text",
        secrets=("ProsePw10",),
        kept=("for now",),
    ),
    Leak("prose-api-key", "api key is ProseKey11", "todo2", "text", secrets=("ProseKey11",)),
]


def _log_leak(logger: JournalLogger, leak: Leak) -> None:
    if leak.kind == "dict_value":  # a structure inside a dict record
        logger.log({leak.identifier: leak.item}, "doc", kind="dict")
    else:
        logger.log(leak.item, leak.identifier, kind=leak.kind, **leak.options)


@pytest.mark.parametrize("leak", LEAKS, ids=[leak.id for leak in LEAKS])
def test_secret_never_reaches_the_journal(leak: Leak, tmp_path: Path) -> None:
    logger = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch")
    logger.create_logger_context(rank=0)
    _log_leak(logger, leak)
    assert logger.destroy_logger_context()
    assert logger.journal_path is not None
    records = read_run(logger.journal_path).records
    assert len(records) == 1  # the record is kept, redacted
    stored = json.dumps([records[0].value, records[0].options])
    assert REDACTED in stored
    for kept in leak.kept:
        assert json.dumps(kept)[1:-1] in stored, (kept, stored)
    assert files_containing(tmp_path, list(leak.secrets)) == []


NOT_SECRETS = {
    "git_commit": "3f2a9c1d4b5e6f708192a3b4c5d6e7f8091a2b3c",
    "commit_message": "merge 9e107d9d372bb6826bd81d3542a419d6e107d9d3 into main",
    "tokenizer": "bert-base-uncased",
    "max_tokens": 512,
    "pad_token_id": 0,
    "secret_name": "prod-db-credentials",
    "author": "Jane Doe",
    "augmentation": "Basic augmentation pipeline",
    "data": "https://example.org/datasets/cifar10.tar.gz",
    "ssh_remote": "git@github.com:org/repo.git",
    "task": "task-management-system-classifier-v2-large",
    "port_flag": "-p 8080",
    "note": "the bearer of this result",
}


def test_ordinary_values_are_not_redacted(tmp_path: Path) -> None:
    logger = JournalLogger(savedir=str(tmp_path / "sd"))
    logger.create_logger_context(rank=0)
    logger.save_hyperparameters(NOT_SECRETS)
    logger.log(" ".join(str(v) for v in NOT_SECRETS.values()), "notes.txt", kind="text")
    logger.destroy_logger_context()
    assert logger.journal_path is not None
    data = read_run(logger.journal_path)
    assert data.params == NOT_SECRETS
    assert data.of_kind("text")[0].value == " ".join(str(v) for v in NOT_SECRETS.values())


@pytest.fixture
def fresh_secrets() -> Iterator[None]:
    """Each test configures redaction from scratch; the defaults come back after it."""
    secrets.reset()
    yield
    secrets.reset()


def test_extra_key_and_value_patterns_and_allow_lists(tmp_path: Path, fresh_secrets: None) -> None:
    secrets.add_key_patterns(r"^internal_id$")
    secrets.add_value_patterns(r"EMP-\d{6}", r"badge=(\w+)")
    secrets.allow_keys(["hf_token"])
    secrets.allow_values(["postgres://demo:demo@localhost/demo"])
    logger = JournalLogger(savedir=str(tmp_path / "sd"))
    logger.create_logger_context(rank=0)
    logger.save_hyperparameters(
        {
            "internal_id": "I-42",
            "owner": "EMP-123456 in team x",
            "door": "badge=B9Z77 ok",
            "hf_token": "hf_allowed_on_purpose",
            "demo_db": "postgres://demo:demo@localhost/demo",
            "other_db": "postgres://demo:Other7@localhost/demo",
        }
    )
    logger.destroy_logger_context()
    assert logger.journal_path is not None
    assert read_run(logger.journal_path).params == {
        "internal_id": REDACTED,
        "owner": f"{REDACTED} in team x",
        "door": f"badge={REDACTED} ok",
        "hf_token": "hf_allowed_on_purpose",
        "demo_db": "postgres://demo:demo@localhost/demo",
        "other_db": f"postgres://demo:{REDACTED}@localhost/demo",
    }


def test_set_enabled_false_turns_redaction_off(tmp_path: Path, fresh_secrets: None) -> None:
    secrets.set_enabled(False)
    logger = JournalLogger(savedir=str(tmp_path / "sd"))
    logger.create_logger_context(rank=0)
    logger.log("hunter2-raw", "db_password", kind="param")
    logger.log("postgres://u:RawPw@h/db", "notes", kind="text", token="RawOpt")
    logger.destroy_logger_context()
    assert logger.journal_path is not None
    records = read_run(logger.journal_path).records
    assert [r.value for r in records] == ["hunter2-raw", "postgres://u:RawPw@h/db"]
    assert records[1].options == {"token": "RawOpt"}


@pytest.mark.slow
@pytest.mark.parametrize("switch", ["0", "false", "off"])
def test_env_var_turns_redaction_off_for_the_process(switch: str, tmp_path: Path) -> None:
    script = (
        "import sys; from fanlog import JournalLogger\n"
        "lg = JournalLogger(savedir=sys.argv[1], job_id='env')\n"
        "lg.create_logger_context(rank=0); lg.log('EnvRaw-1', 'api_key', kind='param')\n"
        "lg.destroy_logger_context()\n"
    )
    for value, expected in ((switch, "EnvRaw-1"), ("1", REDACTED)):
        savedir = tmp_path / f"sd-{value}"
        env = {**os.environ, "FANLOG_REDACT": value}
        subprocess.run([sys.executable, "-c", script, str(savedir)], env=env, check=True, timeout=120)
        assert read_run(savedir).params == {"api_key": expected}


def test_circular_structures_are_refused_naming_where(tmp_path: Path) -> None:
    logger = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch")
    logger.create_logger_context(rank=0)
    config: dict[str, Any] = {"lr": 0.1, "model": {"layers": [1, 2]}}
    config["model"]["layers"].append(config)
    for kind in ("dict", "param", "dataset"):
        where = r"\['model'\]\['layers'\]\[2\]"
        with pytest.raises(ValueError, match=rf"kind='{kind}'.*'cfg'.*circular.*{where}"):
            logger.log(config, "cfg", kind=kind)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match=r"kind='metric'.*'x'.*circular"):
        logger.log(1.0, "x", extra=loop)
    logger.log(2.0, "after")
    logger.destroy_logger_context()
    assert logger.journal_path is not None
    assert [r.key for r in read_run(logger.journal_path).records] == ["after"]


@pytest.mark.slow
def test_every_class_of_secret_reaches_no_tracker(
    tmp_path: Path, mlflow_server: Any, offline_wandb: None
) -> None:
    """Every case above through MLflow, TensorBoard, W&B (offline) and the journal at once."""
    import mlflow
    from tensorboard.backend.event_processing import event_accumulator as ea

    from fanlog.backends.mlflow import MLflowLogger
    from fanlog.backends.tensorboard import TensorBoardLogger
    from fanlog.backends.wandb import WandBLogger
    from support.wandb_log import read_transaction_log

    savedir = tmp_path / "sd"
    constructor_secrets = ("CtorTagPw1", "ctorTok-2", "CtorDescTok3")
    logger = LoggersCollection(
        [
            MLflowLogger(
                savedir=str(savedir),
                tracking_uri=mlflow_server.url,
                experiment_name="leaks",
                tags={"db": "postgres://u:CtorTagPw1@h/db", "deploy_token": "ctorTok-2"},
                run_description="launched with HF_TOKEN=CtorDescTok3",
            ),
            TensorBoardLogger(savedir=str(savedir)),
            WandBLogger(
                savedir=str(savedir), mode="offline", settings={"x_disable_stats": True, "console": "off"}
            ),
        ],
        savedir=str(savedir),
        unsupported="ignore",
    )
    logger.create_logger_context(rank=0)
    leaks = [leak for leak in LEAKS if logger.supports(leak.kind.replace("dict_value", "dict"))]
    assert len(leaks) >= len(LEAKS) - 1  # only prov_documents has no tracker here
    for index, leak in enumerate(leaks):
        identifier = f"l{index}/{leak.identifier}"  # unique keys; the same last component
        if leak.kind == "dict_value":
            logger.log({leak.identifier: leak.item}, f"l{index}/doc", kind="dict")
        else:
            logger.log(leak.item, identifier, kind=leak.kind, **leak.options)
    assert logger.flush(timeout=180)
    mlflow_member = logger.loggers[0]
    assert isinstance(mlflow_member, MLflowLogger)
    run_id, journal_path = mlflow_member.mlflow_run_id, logger.journal_path
    assert logger.destroy_logger_context()
    wandb_file = wait_for_wandb_exit(savedir)

    # Nothing was lost: every record is in the journal and in each tracker that takes its kind.
    assert journal_path is not None
    records = read_run(journal_path).records
    assert len(records) == len(leaks)
    params = [r for r in records if r.kind == "param"]
    run = mlflow.MlflowClient(tracking_uri=mlflow_server.url).get_run(run_id)
    assert {k for k in run.data.params} == {r.key for r in params}
    assert run.data.tags["db"] == f"postgres://u:{REDACTED}@h/db"
    assert run.data.tags["deploy_token"] == REDACTED
    assert run.data.tags["mlflow.note.content"] == f"launched with HF_TOKEN={REDACTED}"
    tags = [r for r in records if r.kind == "tag"]
    assert all(run.data.tags[r.key] == r.value for r in tags) and tags
    (events,) = glob.glob(str(savedir / "tensorboard" / "**" / "events.out.*"), recursive=True)
    accumulator = ea.EventAccumulator(os.path.dirname(events), size_guidance={ea.TENSORS: 0})
    accumulator.Reload()
    texts = [r.key for r in records if r.kind in ("text", "dict")]
    assert set(texts) <= set(accumulator.Tags()["tensors"])
    config = {}
    for record in read_transaction_log(wandb_file):
        if record.WhichOneof("record_type") == "config":
            config.update({item.key: item.value_json for item in record.config.update})
    assert {r.key for r in params} <= set(config)

    # ... and no raw secret in any byte those trackers or the journal wrote.
    every = [s for leak in leaks for s in leak.secrets] + list(constructor_secrets)
    assert files_containing(tmp_path, every) == []
    assert files_containing(Path(mlflow_server.workdir), every) == []
