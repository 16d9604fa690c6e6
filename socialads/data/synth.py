"""Synthetic users with the bundled dataset's schema and joint distribution, as partitioned
Parquet, written chunk by chunk.

The model: one cell per (Purchased, Gender), drawn with the original's cell frequencies; in
each cell a 2-D Gaussian copula of (Age, EstimatedSalary) with the cell's empirical marginals.
A copula keeps each marginal as observed (interpolated between order statistics, so every
value stays inside the observed range and hence inside the declared bounds, with no
clipping) and the cell's rank correlation of Age and salary; a KDE would smooth the
marginals past the bounds and need clipping. Values get the original's types and rounding:
integer Age, salary rounded to the original's step (every salary is a multiple of 1,000).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from socialads.data.lake import Lake, bundled_dataset
from socialads.data.schema import AGE, GENDER, GENDERS, SALARY, TARGET, USER_ID
from socialads.errors import LakeError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

PART_NAME = "part-{index:05d}.parquet"
DEFAULT_CHUNK_ROWS = 100_000
SALARY_STEP = 1000
"""The original's salaries are whole thousands."""


@dataclass(frozen=True)
class Cell:
    """One (Purchased, Gender) cell: its share of the rows and its copula's parts."""

    purchased: int
    gender: str
    share: float
    ages: np.ndarray
    """Sorted observed ages (the empirical marginal)."""
    salaries: np.ndarray
    correlation: float
    """Correlation of the normal scores of Age and salary (the Gaussian copula's one
    parameter)."""


@dataclass(frozen=True)
class SynthModel:
    """The fitted generator: cells in a fixed order."""

    cells: tuple[Cell, ...]

    def sample(self, rows: int, rng: np.random.Generator) -> pd.DataFrame:
        """``rows`` synthetic rows (Gender, Age, EstimatedSalary, Purchased)."""
        import numpy as np
        import pandas as pd
        from scipy.stats import norm

        shares = np.array([c.share for c in self.cells])
        counts = rng.multinomial(rows, shares / shares.sum())
        parts = []
        for cell, count in zip(self.cells, counts, strict=True):
            if count == 0:
                continue
            cov = [[1.0, cell.correlation], [cell.correlation, 1.0]]
            uniform = norm.cdf(rng.multivariate_normal([0.0, 0.0], cov, size=count))
            ages = np.quantile(cell.ages, uniform[:, 0])
            salaries = np.quantile(cell.salaries, uniform[:, 1])
            parts.append(
                pd.DataFrame(
                    {
                        GENDER: cell.gender,
                        AGE: np.rint(ages).astype("int64"),
                        SALARY: (np.rint(salaries / SALARY_STEP) * SALARY_STEP).astype("int64"),
                        TARGET: np.full(count, cell.purchased, dtype="int64"),
                    }
                )
            )
        frame = pd.concat(parts, ignore_index=True)
        # Cells were drawn in blocks: shuffle so that any slice of a part is a fair sample.
        return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)


def fit(frame: pd.DataFrame) -> SynthModel:
    """Fit the generator on a validated frame (canonical Gender, numeric features)."""
    import numpy as np
    from scipy.stats import norm, rankdata

    cells = []
    for purchased in (0, 1):
        for gender in GENDERS:
            rows = frame[(frame[TARGET] == purchased) & (frame[GENDER] == gender)]
            if rows.empty:
                continue
            ages = rows[AGE].to_numpy(dtype=float)
            salaries = rows[SALARY].to_numpy(dtype=float)
            # Normal scores of the ranks (average ranks for ties), then their correlation.
            scores = [norm.ppf(rankdata(v) / (len(v) + 1)) for v in (ages, salaries)]
            correlation = float(np.corrcoef(*scores)[0, 1]) if len(rows) > 2 else 0.0
            cells.append(
                Cell(
                    purchased=purchased,
                    gender=gender,
                    share=len(rows) / len(frame),
                    ages=np.sort(ages),
                    salaries=np.sort(salaries),
                    correlation=0.0 if np.isnan(correlation) else correlation,
                )
            )
    return SynthModel(tuple(cells))


def fit_bundled() -> SynthModel:
    """The generator fitted on the dataset shipped with the package."""
    from socialads.data.validation import load_and_validate

    return fit(load_and_validate(bundled_dataset()))


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesize` wrote."""

    output: str
    rows: int
    parts: int
    bytes: int
    purchased: int
    seed: int
    seconds: float

    def line(self) -> str:
        """One line for people."""
        share = self.purchased / self.rows if self.rows else 0.0
        parts = f"{self.parts} Parquet part{'s' if self.parts > 1 else ''}"
        return (
            f"wrote {self.rows:,} rows in {parts} ({self.bytes / 1e6:.1f} MB) "
            f"to {self.output} in {self.seconds:.1f} s; Purchased=1 {share:.1%}, seed {self.seed}"
        )


def chunk_table(model: SynthModel, seed: int, index: int, rows: int, first_id: int) -> pa.Table:
    """Chunk ``index`` of a dataset: its own random stream (seed, index), so a chunk does not
    depend on the others, and User IDs from ``first_id`` on."""
    import numpy as np
    import pyarrow as pa

    frame = model.sample(rows, np.random.default_rng([seed, index]))
    frame.insert(0, USER_ID, np.arange(first_id, first_id + rows, dtype="int64"))
    return pa.Table.from_pandas(frame, preserve_index=False)


def synthesize(
    lake: Lake,
    rows: int,
    *,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    model: SynthModel | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write ``rows`` synthetic rows below ``lake`` (the output folder) as
    ``part-NNNNN.parquet`` files of at most ``chunk_rows`` rows each; one chunk is in memory
    at a time. The same seed, rows and chunk size give the same files.

    Refuses a folder that already holds parts (a second run would mix two datasets).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows < 1 or chunk_rows < 1:
        raise ValueError("rows and chunk_rows must be positive")
    if lake.glob("*.parquet"):
        raise LakeError(
            f"{lake.url} already holds Parquet files; choose an empty --output or remove them"
        )
    started = time.perf_counter()
    model = model or fit_bundled()
    written = purchased = size = 0
    parts = -(-rows // chunk_rows)
    for index in range(parts):
        count = min(chunk_rows, rows - written)
        table = chunk_table(model, seed, index, count, first_id=written + 1)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        lake.write_bytes(PART_NAME.format(index=index), data)
        written += count
        size += len(data)
        purchased += int(table.column(TARGET).to_numpy().sum())
        if on_progress is not None:
            on_progress(written, rows)
    return SynthSummary(
        output=lake.url,
        rows=written,
        parts=parts,
        bytes=size,
        purchased=purchased,
        seed=seed,
        seconds=time.perf_counter() - started,
    )
