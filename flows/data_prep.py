"""The data-prep flow: ingest → validate → normalise/split → scale → write back to the lake."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import LAKE_IO, flow_settings
from socialads.data.lake import MANIFEST_KEY, PROCESSED, RAW_KEY, Lake
from socialads.data.processed import Manifest, write_processed
from socialads.data.production import ProductionLineage, training_rows
from socialads.data.raw import RawDataset, locate, raw_url, read_validated
from socialads.features.preprocessing import fit_scaler, split
from socialads.progress import step

if TYPE_CHECKING:
    import pandas as pd

    from socialads.settings import Settings


@task(name="ingest-raw", **LAKE_IO)
def ingest_raw(lake: Lake, settings: Settings) -> RawDataset:
    """Locate the raw dataset (SOCIALADS_RAW_DATASET, else the lake's raw CSV, put there from
    the bundled dataset when missing) and fingerprint it; a CSV is read here."""
    url = raw_url(settings, lake)
    with step("read", "data-prep", "read the raw file", url) as note:
        if not settings.raw_dataset and lake.ensure_raw():
            get_run_logger().info(
                "the lake had no raw file; uploaded the bundled dataset to %s", lake.uri(RAW_KEY)
            )
        raw = locate(settings, url)
        note.detail = raw.describe()
    return raw


@task(name="validate", cache_policy=NO_CACHE)
def validate_raw(raw: RawDataset, settings: Settings) -> pd.DataFrame:
    """Check the raw data against the schema; stops the run with the problems named."""
    with step("validate", "data-prep", "validate") as note:
        frame = read_validated(settings, raw)
        note.detail = f"{len(frame):,} rows"
    return frame


@task(name="split", cache_policy=NO_CACHE)
def split_data(
    frame: pd.DataFrame, test_size: float, random_state: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/test split."""
    with step("split", "data-prep", "stratified split") as note:
        train, test = split(frame, test_size, random_state)
        note.detail = f"{len(train):,} train / {len(test):,} test rows"
    return train, test


@task(name="production-rows", **LAKE_IO)
def production_rows(lake: Lake) -> tuple[pd.DataFrame, ProductionLineage]:
    """The labelled production rows (prediction log ⨝ feedback), checked and de-duplicated."""
    with step("production", "data-prep", "labelled production rows") as note:
        rows, lineage = training_rows(lake)
        note.detail = f"{lineage.rows:,} for the training split, {lineage.rejected:,} invalid"
    return rows, lineage


@task(name="write-processed", **LAKE_IO)
def write_outputs(
    lake: Lake,
    raw: RawDataset,
    frame: pd.DataFrame,
    train: pd.DataFrame,
    test: pd.DataFrame,
    settings: Settings,
    production: ProductionLineage | None = None,
) -> Manifest:
    """Fit the scaler, write splits and scaler under a new run prefix, then switch the
    manifest to it (readers keep the previous run until then)."""
    with step("publish", "data-prep", "scale and publish") as note:
        manifest = write_processed(
            lake,
            raw_uri=raw.uri,
            raw_sha256=raw.sha256,
            raw_rows=len(frame),
            train=train,
            test=test,
            scaler=fit_scaler(train),
            test_size=settings.test_size,
            random_state=settings.random_state,
            keep=settings.processed_keep,
            production=production,
        )
        note.detail = (
            f"splits and scaler under {lake.uri(f'{PROCESSED}/{manifest.run_id}/')}, "
            f"{MANIFEST_KEY} points there"
        )
    return manifest


def run_data_prep(settings: Settings) -> Manifest:
    """Data-prep steps as tasks, for use inside any flow."""
    import pandas as pd

    lake = Lake.from_settings(settings)
    raw = ingest_raw(lake, settings)
    frame = validate_raw(raw, settings)
    train, test = split_data(frame, settings.test_size, settings.random_state)
    lineage = None
    if settings.train_with_production:
        # The training split only: the holdout stays the raw data's own split, so the
        # promotion gate scores a new version and the champion on the same rows.
        rows, lineage = production_rows(lake)
        if not rows.empty:  # (an empty frame would still turn the integer columns to floats)
            train = pd.concat([train, rows], ignore_index=True)
    return write_outputs(lake, raw, frame, train, test, settings, lineage)


@flow(name="data-prep", log_prints=True)
def data_prep_flow(
    test_size: float | None = None, random_state: int | None = None
) -> dict[str, Any]:
    """Ingest the raw dataset (SOCIALADS_RAW_DATASET, default the lake's raw CSV), validate
    it, split it and write the results back.

    Parameters left empty take their value from the settings (SOCIALADS_TEST_SIZE, ...).
    """
    settings = flow_settings(test_size=test_size, random_state=random_state)
    manifest = run_data_prep(settings)
    return manifest.__dict__
