"""The production records in the lake: row checks, the prediction log, feedback and the join."""

from __future__ import annotations

import io
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from socialads.data import production
from socialads.data.lake import Lake
from socialads.data.production import (
    FEEDBACK_LOG,
    PREDICTION_LOG,
    check_feedback,
    labelled_rows,
    read,
    record_feedback,
    table_of,
    write_parts,
)
from socialads.data.validation import check_records
from socialads.errors import DataValidationError
from socialads.serving.predlog import BufferedLog, RequestIds

T0 = datetime(2026, 12, 1, 23, 59, 58, tzinfo=UTC)


def prediction(request_id: str, at: datetime, p1: float = 0.7) -> tuple[object, ...]:
    return (request_id, at, "api", "3", "Female", 45.0, 90000.0, p1, int(p1 > 0.5))


# -- row checks ---------------------------------------------------------------------------------


def test_check_records_keeps_valid_rows_and_names_every_bad_field() -> None:
    frame = pd.DataFrame(
        {
            "User ID": ["a", "b", "c", "d", "e", "f"],
            "Gender": [" male", "Female", "x", None, "FEMALE", "Male"],
            "Age": ["45", "abc", "150", "30", "", "18"],
            "EstimatedSalary": ["90000", "1", "2", "-5", "100", "1000000"],
        },
        index=range(1, 7),
    )
    clean, reasons = check_records(frame)
    assert clean.index.tolist() == [1, 6]
    assert clean.loc[1].tolist() == ["Male", 45.0, 90000.0]
    assert clean.loc[6].tolist() == ["Male", 18.0, 1_000_000.0]  # bounds are inclusive
    assert reasons.to_dict() == {
        2: "Age: must be a number, got 'abc'",
        3: "Gender: must be one of Female, Male in any letter case, got 'x'; "
        "Age: must be between 18 and 100 years, got '150'",
        4: "Gender: is required; EstimatedSalary: must be between 0 and 1,000,000, got '-5'",
        5: "Age: is required",
    }


@pytest.mark.parametrize("value", ["inf", "nan", True])
def test_check_records_refuses_what_the_api_refuses(value: object) -> None:
    frame = pd.DataFrame({"Gender": ["Male"], "Age": [value], "EstimatedSalary": [5000.0]})
    clean, reasons = check_records(frame)
    assert clean.empty
    assert reasons.iloc[0].startswith("Age: must be")


def test_check_records_names_a_missing_column() -> None:
    clean, reasons = check_records(pd.DataFrame({"Gender": ["Male"], "Age": [30]}))
    assert clean.empty
    assert reasons.iloc[0] == "EstimatedSalary: the column is missing"


# -- the log in the lake ------------------------------------------------------------------------


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake((tmp_path / "lake").as_uri(), retries=0)


def test_parts_are_date_partitioned_and_readable_as_is(lake: Lake, tmp_path: Path) -> None:
    rows = [prediction("r1", T0), prediction("r2", T0 + timedelta(seconds=4))]
    keys = write_parts(lake, PREDICTION_LOG, table_of(PREDICTION_LOG, rows))
    assert [k.split("/")[:2] for k in keys] == [
        ["predictions", "date=2026-12-01"],
        ["predictions", "date=2026-12-02"],
    ]
    # Hive-style partitions: pyarrow (and pandas, DuckDB) read the folder with no help.
    table = pq.read_table(tmp_path / "lake" / "predictions")
    assert sorted(table["request_id"].to_pylist()) == ["r1", "r2"]
    assert sorted(str(d) for d in table["date"].to_pylist()) == ["2026-12-01", "2026-12-02"]

    window = read(lake, PREDICTION_LOG, T0 + timedelta(seconds=1), T0 + timedelta(days=1))
    assert window["request_id"].tolist() == ["r2"]


def test_labelled_rows_join_on_request_id_and_the_latest_label_wins(lake: Lake) -> None:
    rows = [prediction(f"r{i}", T0 + timedelta(seconds=i)) for i in range(4)]
    write_parts(lake, PREDICTION_LOG, table_of(PREDICTION_LOG, rows))
    record_feedback(lake, [("r1", 0), ("r2", 1), ("unknown", 1)])
    record_feedback(lake, [("r1", 1)])  # a correction arrives later
    joined = labelled_rows(lake, T0, T0 + timedelta(days=1))
    assert joined[["request_id", "Purchased"]].values.tolist() == [["r1", 1], ["r2", 1]]
    assert set(joined.columns) >= {"Gender", "Age", "EstimatedSalary", "probability"}
    assert labelled_rows(lake, T0 - timedelta(days=3), T0 - timedelta(days=2)).empty


def test_training_rows_are_checked_deduplicated_and_named_by_a_hash(lake: Lake) -> None:
    rows = [prediction(f"r{i}", T0 + timedelta(seconds=i)) for i in range(4)]
    rows.append(prediction("r1", T0 + timedelta(seconds=9)))  # a client reused its request id
    # Written by something other than socialads: an age the schema refuses.
    rows.append(("bad", T0, "api", "3", "Female", 150.0, 90000.0, 0.7, 1))
    write_parts(lake, PREDICTION_LOG, table_of(PREDICTION_LOG, rows))
    record_feedback(lake, [("r0", 0), ("r1", 1), ("r3", 1), ("bad", 1)])

    frame, lineage = production.training_rows(lake, T0 + timedelta(days=1))
    assert list(frame.columns) == ["Gender", "Age", "EstimatedSalary", "Purchased"]
    assert frame.values.tolist() == [
        ["Female", 45.0, 90000.0, 0],
        ["Female", 45.0, 90000.0, 1],
        ["Female", 45.0, 90000.0, 1],
    ]
    assert (lineage.rows, lineage.rejected) == (3, 1)
    assert (lineage.first, lineage.last) == (
        T0.isoformat(),
        (T0 + timedelta(seconds=9)).isoformat(),
    )
    import hashlib

    assert lineage.sha256 == hashlib.sha256(b"r0\nr1\nr3").hexdigest()
    # Predictions made from ``end`` on wait for the next run (r3, and r1's second use).
    earlier = production.training_rows(lake, T0 + timedelta(seconds=2))[1]
    assert (earlier.rows, earlier.last) == (2, (T0 + timedelta(seconds=1)).isoformat())


def test_check_feedback_refuses_a_file_with_bad_rows_naming_the_lines() -> None:
    good = pd.DataFrame({"request_id": [" a ", "b"], "purchased": ["1", 0]})
    assert check_feedback(good) == [("a", 1), ("b", 0)]
    bad = pd.DataFrame({"request_id": ["a", "", "c"], "purchased": [1, 1, 2]})
    with pytest.raises(DataValidationError) as caught:
        check_feedback(bad)
    assert caught.value.problems == [
        "request_id must be 1 to 128 characters: line(s) 3",
        "purchased must be 0 or 1: line(s) 4",
    ]
    with pytest.raises(DataValidationError, match="missing column"):
        check_feedback(pd.DataFrame({"id": ["a"]}))


# -- the buffered writer ------------------------------------------------------------------------


def written(lake: Lake) -> list[str]:
    return read(lake, PREDICTION_LOG)["request_id"].tolist()


def test_buffered_log_flushes_by_size_in_the_background_and_on_close(lake: Lake) -> None:
    log = BufferedLog(lake, PREDICTION_LOG, flush_rows=3, flush_seconds=3600, max_buffered=100)
    log.start()
    log.add(prediction("a", T0), prediction("b", T0))
    log.add(prediction("c", T0))  # the third record wakes the writer
    deadline = time.monotonic() + 10
    while log.written < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(written(lake)) == ["a", "b", "c"]
    log.add(prediction("d", T0))
    log.close()
    assert sorted(written(lake)) == ["a", "b", "c", "d"]
    assert len(production.part_keys(lake, PREDICTION_LOG)) == 2


def test_buffered_log_keeps_records_while_the_lake_fails_and_counts_drops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "lake"
    blocker.write_text("a file where the lake's folder should be")
    lake = Lake(blocker.as_uri(), retries=0)
    drops: list[int] = []
    log = BufferedLog(
        lake, PREDICTION_LOG, flush_rows=2, flush_seconds=3600, max_buffered=3, on_drop=drops.append
    )
    with caplog.at_level(logging.WARNING, logger="socialads.serving.predlog"):
        log.add(prediction("a", T0), prediction("b", T0))
        assert log.flush() is False  # the lake refuses: records stay buffered
        assert log.buffered == 2
        log.add(prediction("c", T0), prediction("d", T0), prediction("e", T0))
        assert log.flush() is False
        assert (log.buffered, log.dropped, sum(drops)) == (3, 2, 2)
        failures = [r for r in caplog.records if "cannot write" in r.getMessage()]
        assert len(failures) == 1  # once per episode, not once per flush

        blocker.unlink()  # the lake is back
        assert log.flush() is True
    assert sorted(written(lake)) == ["a", "b", "c"]
    assert "2 records were dropped" in caplog.text


def test_feedback_rows_are_typed(lake: Lake) -> None:
    record_feedback(lake, [("x", 1)])
    frame = read(lake, FEEDBACK_LOG)
    assert frame["purchased"].tolist() == [1]
    assert str(frame["received_at"].dtype).startswith("datetime64")
    buffer = io.BytesIO(lake.read_bytes(production.part_keys(lake, FEEDBACK_LOG)[0]))
    assert pq.read_schema(buffer) == production.feedback_schema()


def test_request_ids_are_new_unless_the_client_sent_a_sane_one() -> None:
    import threading

    ids, other = RequestIds(), RequestIds()
    made: list[str] = []

    def make() -> None:
        made.extend(ids() for _ in range(5000))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 20000  # distinct across threads
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in made)
    assert other() not in made  # another app (worker, start) draws another prefix
    assert ids("order-17:retry_2.a") == "order-17:retry_2.a"
    for insane in ("", "has space", "x" * 129, "naïve", "a/b"):
        assert len(ids(insane)) == 32, insane
