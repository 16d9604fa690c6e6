"""The parent flow: data-prep then train, as the original project's DAG ran them."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.data_prep import data_prep_flow
from flows.train import train_flow
from socialads.settings import CandidateName, SelectionMetric


@flow(name="pipeline", log_prints=True)
def pipeline_flow(
    test_size: float | None = None,
    random_state: int | None = None,
    selection_metric: SelectionMetric | None = None,
    candidates: list[CandidateName] | None = None,
    cv_folds: int | None = None,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Run data-prep, then train, as subflows; a failed validation stops before training.

    Empty parameters take their value from the settings (SOCIALADS_*); ``dask_address``
    (SOCIALADS_DASK_ADDRESS) runs the training's search on that Dask scheduler's workers.
    """
    manifest = data_prep_flow(test_size=test_size, random_state=random_state)
    report = train_flow(
        selection_metric=selection_metric,
        candidates=candidates,
        cv_folds=cv_folds,
        dask_address=dask_address,
    )
    return {"data_prep": manifest, "train": report}
