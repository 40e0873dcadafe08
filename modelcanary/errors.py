"""The one exception tree of modelcanary.

::

    ModelcanaryError                  base of everything raised on purpose
    ├── ConfigError                   a setting or policy value is invalid (names the field)
    ├── EventError                    an event cannot be decoded or fails its schema
    ├── RoutingError                  a routing input is invalid (fraction out of range)
    ├── InfraError                    embedded infrastructure cannot start, stop or be found
    │   └── PortInUseError            a port the embedded service needs is taken
    ├── BrokerUnavailableError        Kafka cannot be reached (names the bootstrap address)
    ├── RegistryError                 MLflow registry call failed or the model is unknown
    │   └── RegistryUnavailableError  the MLflow server cannot be reached
    ├── PredictionError               rows lack a model feature or hold a non-number
    ├── RolloutError                  a rollout operation is illegal in the current state
    ├── InvalidRequestError           a serving request a client must fix (names the field)
    │   └── InputRejectedError        the champion cannot score these (valid) values
    └── NotReadyError                 serving cannot answer yet (no champion loaded)

Third-party exceptions are translated at the adapter that meets them with
``raise ... from exc``; messages a human must act on say what to do.
"""

from __future__ import annotations


class ModelcanaryError(Exception):
    """Base class of every error modelcanary raises on purpose."""


class ConfigError(ModelcanaryError):
    """A configuration or policy value is invalid; the message names the field."""


class EventError(ModelcanaryError):
    """An event cannot be decoded, or it does not satisfy its schema."""


class RoutingError(ModelcanaryError):
    """A routing input is invalid (for example a traffic fraction outside [0, 1])."""


class InfraError(ModelcanaryError):
    """The embedded infrastructure cannot be started, stopped or found."""


class PortInUseError(InfraError):
    """A port that an embedded service needs is already taken by another process."""


class BrokerUnavailableError(ModelcanaryError):
    """The Kafka broker cannot be reached at the configured bootstrap address."""


class RegistryError(ModelcanaryError):
    """An MLflow registry call failed, or the model or version does not exist."""


class RegistryUnavailableError(RegistryError):
    """The MLflow tracking server cannot be reached at the configured URI."""


class PredictionError(ModelcanaryError):
    """Rows given to a loaded model lack a feature of its signature or hold a non-number."""


class RolloutError(ModelcanaryError):
    """A rollout operation is not legal in the rollout's current state."""


class InvalidRequestError(ModelcanaryError):
    """A serving request a client must fix: missing, unknown or ill-typed features.

    The message names the field (``features.mean_radius: expected a number``); the
    service answers it with a 4xx status.
    """


class NotReadyError(ModelcanaryError):
    """The serving router cannot answer yet: no champion is registered or loaded."""


class InputRejectedError(InvalidRequestError):
    """The features fit the signature but the champion cannot score them.

    The model raised ``ValueError``, as scikit-learn does for values it cannot handle
    (an overflow to infinity inside a scaler, say); serving answers 422.
    """
