"""The same sklearn search as `socialads train`, with no Prefect, no MLflow and no lake:
the baseline that benchmarks/train_wall_time.py compares the pipeline against."""

from __future__ import annotations

import time

started = time.perf_counter()

from socialads.data.lake import bundled_dataset  # noqa: E402
from socialads.data.validation import load_and_validate  # noqa: E402
from socialads.features.preprocessing import split  # noqa: E402
from socialads.models.search import rank  # noqa: E402
from socialads.models.training import search_all  # noqa: E402
from socialads.settings import load_settings  # noqa: E402


def main() -> None:
    """Validate, split and search every candidate; print the winner."""
    settings = load_settings()
    train, test = split(
        load_and_validate(bundled_dataset()), settings.test_size, settings.random_state
    )
    best = rank(search_all(settings, train, test))[0]
    print(
        f"best {best.name}: cv {best.cv_score:.4f}, holdout f1 {best.holdout['f1']:.4f}; "
        f"{time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
