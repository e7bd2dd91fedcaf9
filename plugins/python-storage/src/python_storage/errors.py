"""Step errors as exceptions: raise one anywhere, the export adapter turns it into the
contract's `step-error` variant."""

from wit_world.imports import types
from componentize_py_types import Err


def invalid_spec(message: str) -> Err:
    """The Wukong asks for something this plugin cannot do; not retried until it changes."""
    return Err(types.StepError_InvalidSpec(message))


def invalid_config(message: str) -> Err:
    """The plugin's config is wrong."""
    return Err(types.StepError_InvalidConfig(message))


def cluster_error(message: str) -> Err:
    """A read through the `cluster` import failed; the host retries with backoff."""
    return Err(types.StepError_Cluster(message))
