"""Where the trainer's metrics go: `metrics.jsonl` always; TensorBoard and MLflow when the config's `logger` names
them (`logger=tensorboard`, `logger=[tensorboard,mlflow]`; the `tensorboard` and `mlflow` extras).

Loggers are callbacks. Rank 0's trainer calls, on every logger in turn:
- `log_config(config)` once, with the resolved config;
- `log(record)` for every metrics.jsonl line ({"type": "step" | "epoch" | "ddp_check", ...}): TensorBoard and
  MLflow store each number in it as the scalar `<type>/<key>` (`step/loss`, `epoch/val_miou`, `epoch/crop_h`)
  at the record's iteration, so both see exactly what metrics.jsonl holds;
- `log_eval(result, iteration, best)` after every evaluation, with eval.json's content (mIoU, pixel accuracy,
  per-class IoU): the per-class IoUs as `val_iou/<class>` scalars, plus the table;
- `close(failed)` at the end.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from csst_edge.errors import ConfigError
from csst_edge.fileio import append_jsonl, atomic_write_json

LOGGERS = ("tensorboard", "mlflow")
_PACKAGE = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # logger -> the module its extra installs


def logger_names(value) -> list[str]:
    """The `logger` config value as a list of names: a list, or a comma-separated string; "none" is none."""
    items = value if isinstance(value, (list, tuple)) else [value]
    names: list[str] = []
    for item in items:
        for name in str(item if item is not None else "").split(","):
            name = name.strip().lower()
            if name in ("", "none", "jsonl"):  # metrics.jsonl is always written
                continue
            if name not in LOGGERS:
                raise ConfigError(
                    f"config key 'logger' names '{name}'; choose from {', '.join(LOGGERS)} "
                    "(metrics.jsonl is always written)"
                )
            if name not in names:
                names.append(name)
    return names


def check_logger_packages(names: list[str]) -> None:
    """A missing package is one line naming the extra that installs it (before any training starts)."""
    for name in names:
        if not _installed(_PACKAGE[name]):
            raise ConfigError(f'logger={name} needs the {_PACKAGE[name]} package: pip install "csst-edge[{name}]"')


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules holds None for it (imports of it are blocked)
        return False


class TrainLogger:
    """A logger's callbacks; each does nothing unless a logger overrides it. `where` says where it writes."""

    where = ""

    def log_config(self, config: dict) -> None:
        pass

    def log(self, record: dict) -> None:
        pass

    def log_eval(self, result: dict, iteration: int, best: bool) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        pass


class Loggers(TrainLogger):
    """Several loggers as one; as a context manager it closes them all, marking the run failed on an exception."""

    def __init__(self, loggers: list[TrainLogger]):
        self.loggers = loggers

    def log_config(self, config: dict) -> None:
        for logger in self.loggers:
            logger.log_config(config)

    def log(self, record: dict) -> None:
        for logger in self.loggers:
            logger.log(record)

    def log_eval(self, result: dict, iteration: int, best: bool) -> None:
        for logger in self.loggers:
            logger.log_eval(result, iteration, best)

    def close(self, failed: bool = False) -> None:
        for logger in self.loggers:
            logger.close(failed)

    def __enter__(self) -> Loggers:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)


def open_loggers(cfg, run_dir: Path, resumed_after: int | None) -> Loggers:
    """metrics.jsonl plus the loggers `cfg.logger` names, for a new run (`resumed_after` None) or one resumed after
    that iteration."""
    loggers: list[TrainLogger] = [JsonlLogger(run_dir / "metrics.jsonl")]
    for name in logger_names(cfg.logger):
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(run_dir, resumed_after))
        else:
            loggers.append(
                MLflowLogger(run_dir, cfg.mlflow_tracking_uri, cfg.mlflow_experiment, resumed_after is not None)
            )
    return Loggers(loggers)


class JsonlLogger(TrainLogger):
    """One JSON line per record, fsynced (the config is already in config.yaml, the eval table in eval.json)."""

    def __init__(self, path: Path):
        self.path = path

    def log(self, record: dict) -> None:
        append_jsonl(self.path, record)


def scalars(record: dict) -> dict[str, float]:
    """Every number in a metrics.jsonl record as `<type>/<key>`: lists by position (crop → crop_h, crop_w),
    booleans as 0/1; the iteration is the step, not a scalar."""
    kind, out = record.get("type", "metrics"), {}
    for key, value in record.items():
        if key in ("type", "iteration") or value is None:
            continue
        if isinstance(value, (list, tuple)):
            suffixes = ("h", "w") if key == "crop" and len(value) == 2 else [str(i) for i in range(len(value))]
            out.update({f"{kind}/{key}_{s}": float(v) for s, v in zip(suffixes, value, strict=False)})
        elif isinstance(value, (bool, int, float)):
            out[f"{kind}/{key}"] = float(value)
    return out


def class_iou_table(result: dict) -> str:
    """The per-class IoU of an evaluation as a markdown table (TensorBoard renders it in its Text tab)."""
    lines = [f"epoch {result['epoch']}: mIoU {100 * result['miou']:.2f}", "", "| class | IoU (%) |", "|---|---:|"]
    for name, iou in result["per_class_iou"].items():
        lines.append(f"| {name} | {'n/a' if iou is None else f'{100 * iou:.2f}'} |")
    return "\n".join(lines)


class TensorBoardLogger(TrainLogger):
    """Event files in the run directory itself, so `tensorboard --logdir runs` shows one run per run directory."""

    def __init__(self, run_dir: Path, resumed_after: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run repeats the steps logged after its last checkpoint; purge_step makes TensorBoard drop
        # the killed process's copies of them.
        purge = resumed_after + 1 if resumed_after is not None else None
        self.writer = SummaryWriter(str(run_dir), purge_step=purge)
        self.iteration = resumed_after or 0
        self.where = f"TensorBoard: {run_dir} (tensorboard --logdir {run_dir})"

    def log_config(self, config: dict) -> None:
        import yaml

        text = yaml.safe_dump(config, sort_keys=False)
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), self.iteration)

    def log(self, record: dict) -> None:
        self.iteration = int(record.get("iteration", self.iteration))
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, self.iteration)
        if record.get("type") == "epoch":
            self.writer.flush()

    def log_eval(self, result: dict, iteration: int, best: bool) -> None:
        for name, iou in result["per_class_iou"].items():
            if iou is not None:
                self.writer.add_scalar(f"val_iou/{name}", iou, iteration)
        self.writer.add_text("val/per_class_iou", class_iou_table(result), iteration)

    def close(self, failed: bool = False) -> None:
        self.writer.close()


# MLflow metric and parameter names allow letters, digits, _ - . / and spaces
_MLFLOW_NAME = re.compile(r"[^\w\-. /]")
_BARE_TRACKING_URIS = ("databricks", "databricks-uc", "uc")


def redact_uri(uri: str) -> str:
    """A tracking URI safe to print or store: no password (user:pass@host) and no query string (tokens)."""
    parts = urlsplit(uri)
    if parts.password is None and not parts.query:
        return uri
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", parts.fragment))


def resolve_tracking_uri(value: str | None) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment or None to let the store decide).

    Given a URI (http(s)://, sqlite:, postgresql://, databricks, ...), it is used as is. Without one:
    $MLFLOW_TRACKING_URI, else a local store in ./mlruns. A local store is SQLite (`mlruns/mlflow.db`, artifacts
    in `mlruns/artifacts`): MLflow 3 refuses its old file store unless MLFLOW_ALLOW_FILE_STORE=true is set, and
    SQLite needs no server and works offline. A plain folder path is a local store in that folder."""
    value = value or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
    if value in _BARE_TRACKING_URIS or re.match(r"^[A-Za-z][\w+.-]+:", value):
        return value, None
    folder = Path(value).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts")


class MLflowLogger(TrainLogger):
    """One MLflow run per run directory, named after it. The run id is kept in `mlflow_run.json`, so a resumed
    training continues its MLflow run instead of starting a second one."""

    def __init__(self, run_dir: Path, tracking_uri: str | None, experiment: str, resumed: bool):
        from mlflow.tracking import MlflowClient

        uri, artifacts = resolve_tracking_uri(tracking_uri)
        shown = redact_uri(uri)
        self.marker = run_dir / "mlflow_run.json"
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id if found else self.client.create_experiment(experiment, artifact_location=artifacts)
            )
            self.run_id = self._continued_run(shown) if resumed else None
            self.continued = self.run_id is not None
            if self.run_id is None:
                tags = {"csst_edge.run_dir": str(run_dir.resolve())}
                self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name, tags=tags).info.run_id
        except Exception as e:  # MLflow raises its own and its stores' errors (sqlalchemy, requests, ...)
            message = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            raise ConfigError(f"mlflow: cannot use tracking URI {shown}: {message.replace(uri, shown)}") from None
        atomic_write_json(self.marker, {"run_id": self.run_id, "experiment_id": experiment_id, "tracking_uri": shown})
        self.iteration = 0
        self.where = f"MLflow: run {self.run_id} in experiment '{experiment}' at {shown}"

    def _continued_run(self, shown_uri: str) -> str | None:
        try:
            saved = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return None
        if saved.get("tracking_uri") != shown_uri:
            return None
        try:
            run = self.client.get_run(saved["run_id"])
        except Exception:  # deleted or never in this store
            return None
        if run.info.lifecycle_stage != "active":
            return None
        self.client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id

    def log_config(self, config: dict) -> None:
        import yaml
        from mlflow.entities import Param

        params = {_mlflow_name(k): v for k, v in _flatten(config).items()}
        if self.continued:  # parameters cannot change once logged; the resumed config.yaml replaces the artifact
            logged = self.client.get_run(self.run_id).data.params
            params = {k: v for k, v in params.items() if k not in logged}
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # the most one batch may hold
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        self.client.log_text(self.run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")

    def log(self, record: dict) -> None:
        self.iteration = int(record.get("iteration", self.iteration))
        self._metrics(scalars(record), self.iteration)

    def log_eval(self, result: dict, iteration: int, best: bool) -> None:
        ious = {f"val_iou/{name}": iou for name, iou in result["per_class_iou"].items() if iou is not None}
        self._metrics(ious, iteration)
        if best:
            self.client.log_dict(self.run_id, result, "eval.json")

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_mlflow_name(k), v, now, step) for k, v in values.items() if not math.isnan(v)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def _mlflow_name(name: str) -> str:
    return _MLFLOW_NAME.sub("_", name)


def _flatten(value, prefix: str = "") -> dict:
    """Nested config → {"optim.lr": 0.01, "train.0.data": "camvid", ...}; lists of numbers stay one value."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): value}
