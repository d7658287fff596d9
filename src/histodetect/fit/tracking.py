"""Run tracking of one fold: an MLflow run (reopened on resume) and TensorBoard events.

MLflow and TensorBoard are imported when a run is opened, not with this module: the jobs that
only load a trained model (attention maps, predictions) import the trainers' modules without
paying seconds for them.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


class RunLogger:
    """One MLflow run per fold (reopened on resume) plus a TensorBoard writer."""

    def __init__(
        self, uri: str, experiment: str, run_name: str, tb_dir: Path, step_metric: str = "val_loss"
    ) -> None:
        self.uri, self.experiment, self.run_name, self.tb_dir = uri, experiment, run_name, tb_dir
        self.step_metric = step_metric  # logged every epoch: tells which epochs a run has
        from mlflow.tracking import MlflowClient

        with _store_lock(uri):  # fold jobs side by side would each create the tables
            self.client = MlflowClient(uri)
        self.run_id = ""
        self.tb: SummaryWriter | None = None

    def start(self, run_id: str | None, params: dict[str, Any], history: list[dict]) -> str:
        """Create the run (or reopen ``run_id``), replay epochs it lacks; return its id."""
        import mlflow
        from mlflow.entities import Param
        from torch.utils.tensorboard import SummaryWriter

        mlflow.set_tracking_uri(self.uri)
        if run_id is None:
            exp_id = self._experiment_id()
            run_id = self.client.create_run(exp_id, run_name=self.run_name).info.run_id
            items = [Param(k, str(v)) for k, v in params.items()]
            self.client.log_batch(run_id, params=items)
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        logged = {m.step for m in self.client.get_metric_history(run_id, self.step_metric)}
        purge = history[-1]["epoch"] if history else None
        self.tb = SummaryWriter(str(self.tb_dir), purge_step=purge)
        for row in history:
            if row["epoch"] not in logged:
                self._mlflow(row["epoch"], row)
        if history:
            self._tb(history[-1]["epoch"], history[-1])
        return run_id

    def log_epoch(self, epoch: int, row: dict[str, float]) -> None:
        """Log one epoch's metrics with ``step=epoch``."""
        self._mlflow(epoch, row)
        self._tb(epoch, row)

    def finish(self, metrics: dict[str, Any], model_path: Path) -> None:
        """Log the final metrics (at the saved model's epoch) and the model file; close the run."""
        final = {f"final_{k}": float(v) for k, v in metrics.items()}
        self._mlflow(int(metrics["selected_epoch"]), final)
        self.client.log_artifact(self.run_id, str(model_path))
        self.client.set_terminated(self.run_id, "FINISHED")
        self._close()

    def fail(self) -> None:
        """Mark the run failed (best effort)."""
        try:
            if self.run_id:
                self.client.set_terminated(self.run_id, "FAILED")
        finally:
            self._close()

    def _mlflow(self, step: int, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in row.items() if k != "epoch"]
        self.client.log_batch(self.run_id, metrics=items)

    def _tb(self, step: int, row: dict[str, Any]) -> None:
        assert self.tb is not None
        for key, value in row.items():
            if key != "epoch":
                self.tb.add_scalar(key, float(value), step)
        self.tb.flush()

    def _close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        root = None
        if self.uri.startswith("sqlite:///"):
            root = (
                (Path(self.uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
            )
        try:
            return self.client.create_experiment(self.experiment, artifact_location=root)
        except MlflowException:  # created meanwhile by another fold's job
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise
            return exp.experiment_id


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold ``<db>.lock`` beside a SQLite store while it is opened (and its tables made)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
