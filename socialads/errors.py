"""Domain exceptions of the library; the edges (CLI, API, flows) translate them."""

from __future__ import annotations


class SocialAdsError(Exception):
    """Base of every error socialads raises on purpose; its message is meant for people."""

    exit_code: int = 1


class ConfigurationError(SocialAdsError):
    """A setting is missing or malformed."""

    exit_code = 2


class LakeError(SocialAdsError):
    """The data lake could not be read or written (unreachable endpoint, credentials, ...)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(message)


class DataValidationError(SocialAdsError):
    """The raw data does not satisfy the declared schema."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid data: " + "; ".join(problems))


class InvalidInputError(SocialAdsError):
    """A prediction request has a field that is missing, of the wrong type or out of bounds."""

    exit_code = 2

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class RegistryError(SocialAdsError):
    """The MLflow tracking server or model registry failed."""


class NoChampionError(SocialAdsError):
    """The registry has no model under the champion alias yet."""

    exit_code = 3

    @classmethod
    def of(cls, alias: str, model_name: str, registry_uri: str) -> NoChampionError:
        """The error for ``model_name@alias`` missing in the registry at ``registry_uri``."""
        return cls(
            f"no {alias!r} model of {model_name!r} in {registry_uri} yet; "
            "run `socialads train` first"
        )


class ModelNotReadyError(SocialAdsError):
    """No model is being served yet: the first load is in progress or failing."""

    exit_code = 3

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"no model loaded yet: {reason}")


class UnknownVersionError(SocialAdsError):
    """The registry has no such version of the model."""

    exit_code = 3


class ScoringInputError(SocialAdsError):
    """A file to score is missing, unreadable or of an unknown format."""

    exit_code = 2


class NoValidRowsError(SocialAdsError):
    """Not one row of a file to score passed validation."""

    exit_code = 4


class MonitoringError(SocialAdsError):
    """The champion's reference data cannot be found (no lineage on its run, data pruned)."""


class ClusterUnreachableError(SocialAdsError):
    """The Dask scheduler the training was told to use does not answer."""

    exit_code = 5

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        super().__init__(
            f"the Dask scheduler at {address} is unreachable ({reason}); check that it runs, "
            "that this machine can reach that host and port, and SOCIALADS_DASK_ADDRESS "
            "(or --dask)"
        )


class ServiceError(SocialAdsError):
    """A local server (Prefect, MLflow, S3) could not be started, checked or stopped."""

    def __init__(self, message: str, *, service: str) -> None:
        self.service = service
        super().__init__(message)
