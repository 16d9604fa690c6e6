"""Gender encoding, the stratified split and the preprocessing half of the model Pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from socialads.data.schema import FEATURES, GENDER, GENDERS, NUMERIC_FEATURES, TARGET

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.base import BaseEstimator
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

PREPROCESS_STEP = "preprocess"
MODEL_STEP = "model"


def split(
    frame: pd.DataFrame, test_size: float, random_state: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/test split of a validated frame (stratified on the target)."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        frame, test_size=test_size, random_state=random_state, stratify=frame[TARGET]
    )
    return train.reset_index(drop=True), test.reset_index(drop=True)


def features_and_target(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The model's input columns (in declared order) and the target."""
    return frame[list(FEATURES)], frame[TARGET].astype(int)


def build_preprocessor() -> ColumnTransformer:
    """Encode Gender (Female 0, Male 1) and standardise Age and EstimatedSalary.

    Output columns: Gender code, scaled Age, scaled EstimatedSalary.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OrdinalEncoder, StandardScaler

    return ColumnTransformer(
        [
            ("gender", OrdinalEncoder(categories=[list(GENDERS)]), [GENDER]),
            ("numeric", StandardScaler(), list(NUMERIC_FEATURES)),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )


def build_pipeline(estimator: BaseEstimator) -> Pipeline:
    """The model artifact: preprocessing and estimator in one sklearn Pipeline."""
    from sklearn.pipeline import Pipeline

    return Pipeline([(PREPROCESS_STEP, build_preprocessor()), (MODEL_STEP, estimator)])


def fit_scaler(train: pd.DataFrame) -> StandardScaler:
    """The standalone scaler of the numeric features, written to the lake for parity."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit(train[list(NUMERIC_FEATURES)])
