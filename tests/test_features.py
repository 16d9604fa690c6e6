"""Features: the stratified split and the preprocessing half of the model Pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd

from socialads.data.validation import load_and_validate
from socialads.features.preprocessing import build_pipeline, build_preprocessor, fit_scaler, split


def test_split_is_stratified_and_reproducible(raw_bytes: bytes) -> None:
    frame = load_and_validate(raw_bytes)
    train, test = split(frame, 0.2, 42)
    assert (len(train), len(test)) == (320, 80)
    share = frame["Purchased"].mean()
    assert abs(train["Purchased"].mean() - share) < 0.01
    assert abs(test["Purchased"].mean() - share) < 0.02
    again_train, _ = split(frame, 0.2, 42)
    pd.testing.assert_frame_equal(train, again_train)
    other_train, _ = split(frame, 0.2, 7)
    assert not train.equals(other_train)


def test_preprocessor_encodes_gender_as_label_encoder_did_and_scales_numbers() -> None:
    frame = pd.DataFrame(
        {
            "Gender": ["Female", "Male", "Male"],
            "Age": [20.0, 40.0, 60.0],
            "EstimatedSalary": [10.0, 20.0, 30.0],
        }
    )
    out = build_preprocessor().fit_transform(frame)
    assert list(out[:, 0]) == [0.0, 1.0, 1.0]
    assert np.allclose(out[:, 1:].mean(axis=0), 0)
    assert np.allclose(out[:, 1:].std(axis=0), 1)


def test_pipeline_takes_raw_records_and_scaler_matches_pipeline(raw_bytes: bytes) -> None:
    from sklearn.naive_bayes import GaussianNB

    train, test = split(load_and_validate(raw_bytes), 0.2, 42)
    features = ["Gender", "Age", "EstimatedSalary"]
    pipeline = build_pipeline(GaussianNB()).fit(train[features], train["Purchased"])
    proba = pipeline.predict_proba(test[features])
    assert proba.shape == (80, 2)
    scaler = fit_scaler(train)
    inner = pipeline.named_steps["preprocess"].named_transformers_["numeric"]
    assert np.allclose(scaler.mean_, inner.mean_)
    assert np.allclose(scaler.scale_, inner.scale_)
