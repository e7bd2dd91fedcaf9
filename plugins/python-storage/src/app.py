"""The component's exports: `manifest` and `storage` of the `storage-plugin` world
(wit/steps.wit). componentize-py finds these classes by the interfaces' names.

The logic lives in the `python_storage` package; this module only adapts it to the
contract: a step error is raised as `Err(step-error)`, which the bindings return as the
`result`'s error case.
"""

import json
from typing import Callable, TypeVar

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

import python_storage
from python_storage import config, disks
from python_storage.call import Call


T = TypeVar("T")


def _guarded(step: Callable[[], T]) -> T:
    """Runs a step; a bug (any exception but a step error) becomes an `internal` step
    error naming it, instead of a trap that says nothing about the cause."""
    try:
        return step()
    except Err:
        raise
    except Exception as e:  # noqa: BLE001 - the contract has one error type for bugs
        raise Err(types.StepError_Internal(f"python-storage: {type(e).__name__}: {e}"))


def _kind(api_version: str, kind: str) -> types.KindRef:
    return types.KindRef(api_version, kind)


class Manifest(exports.Manifest):
    def describe(self) -> types.PluginManifest:
        writes = [
            _kind(disks.DATA_VOLUME_API_VERSION, disks.DATA_VOLUME_KIND),
            _kind("v1", disks.PVC_KIND),
        ]
        # Objects it writes it also reads back (bound, progress); StorageClasses explain a
        # pending claim.
        reads = writes + [_kind(disks.STORAGE_CLASS_API_VERSION, disks.STORAGE_CLASS_KIND)]
        return types.PluginManifest(
            name=python_storage.NAME,
            version=python_storage.VERSION,
            step=types.StepKind.STORAGE,
            description="Disks as CDI DataVolumes (image) and PVCs (blank), written in Python",
            capabilities=types.Capabilities(reads=reads, writes=writes, actions=[]),
            config_schema=json.dumps(config.SCHEMA),
        )


class Storage(exports.Storage):
    def reconcile(self, ctx: types.Context, upstream: types.Upstream) -> types.StorageOutcome:
        return _guarded(lambda: disks.reconcile(Call(ctx)))

    def finalize(self, ctx: types.Context, upstream: types.Upstream) -> types.Effects:
        return _guarded(lambda: disks.finalize(Call(ctx)))
