"""example-storage, in Python: the component's exports `manifest` and `storage` of the
`storage-plugin` world (wit/steps.wit); componentize-py finds the classes by the
interfaces' names. One claim per disk: a CDI DataVolume for an image disk, a
PersistentVolumeClaim for a blank one, an existing claim used as is. Growing disks (the
conformance suite checks it), import progress and conditions are left to you: see
plugins/python-storage in the Wukong repository.
"""

import base64
import hashlib
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import cluster, types

NAME, VERSION = "example-storage", "0.1.0"
PVC = ("v1", "PersistentVolumeClaim")
DATA_VOLUME = ("cdi.kubevirt.io/v1beta1", "DataVolume")
SCHEMA = {"type": "object", "additionalProperties": False,
          "properties": {"storageClass": {"type": "string"}}}


class Manifest(exports.Manifest):
    def describe(self) -> types.PluginManifest:
        writes = [types.KindRef(*PVC), types.KindRef(*DATA_VOLUME)]
        return types.PluginManifest(
            name=NAME, version=VERSION, step=types.StepKind.STORAGE,
            description="Disks as claims, written in Python",
            capabilities=types.Capabilities(reads=writes, writes=writes, actions=[]),
            config_schema=json.dumps(SCHEMA))


def derived(owner: str, item: str) -> str:
    """An injective name for `item` of `owner`, the Rust SDK's `names::derived`: readable
    `{owner}-{item}` cut to fit 63 characters, then 50 bits of SHA-256 of the pair in
    base32. (`f"{owner}-{item}"` alone is not: `web` + `db-data` and `web-db` + `data`
    would share a claim; the host refuses to write a claim that is not this Wukong's.)"""
    digest = hashlib.sha256(f"{owner}\n{item}".encode()).digest()
    readable = "".join(c if c in "abcdefghijklmnopqrstuvwxyz0123456789-" else "-"
                       for c in f"{owner}-{item}")[:52].strip("-")
    suffix = base64.b32encode(digest).decode().lower()[:10]
    return f"{readable}-{suffix}" if readable else suffix


def _get(ctx: types.Context, kind, name: str):
    """One object of the Wukong's namespace as a dict, None when absent."""
    try:
        text = cluster.get(types.ObjectRef(kind[0], kind[1], ctx.wukong.namespace, name))
    except Err as e:
        raise Err(types.StepError_Cluster(str(e.value)))
    return None if text is None else json.loads(text)


class Storage(exports.Storage):
    def reconcile(self, ctx: types.Context, upstream: types.Upstream) -> types.StorageOutcome:
        config = json.loads(ctx.config or "{}")
        wukong, apply, volumes = ctx.wukong, [], []
        for disk in wukong.disks:
            claim, image = derived(wukong.name, disk.name), None
            if isinstance(disk.source, types.DiskSource_ExistingClaim):
                claim = disk.source.value
            elif isinstance(disk.source, types.DiskSource_Image):
                image = disk.source.value
                if not image.startswith("docker://"):
                    raise Err(types.StepError_InvalidSpec(f"disk {disk.name}: use a docker:// image"))
            spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": disk.size}}}
            if disk.storage_class or config.get("storageClass"):
                spec["storageClassName"] = disk.storage_class or config["storageClass"]
            meta = {"name": claim, "namespace": wukong.namespace, "labels": dict(sorted(wukong.labels))}
            pvc = _get(ctx, PVC, claim)
            dv = _get(ctx, DATA_VOLUME, claim) if image else None
            if image and dv is None:
                apply.append(json.dumps({"apiVersion": DATA_VOLUME[0], "kind": DATA_VOLUME[1], "metadata": meta,
                                         "spec": {"source": {"registry": {"url": image}}, "storage": spec}}))
            elif not image and pvc is None and not isinstance(disk.source, types.DiskSource_ExistingClaim):
                apply.append(json.dumps({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                         "metadata": meta, "spec": spec}))
            phase = ((pvc or {}).get("status") or {}).get("phase") or "Pending"
            importing = ((dv or {}).get("status") or {}).get("phase") if image else None
            bound = phase == "Bound" and importing in (None, "Succeeded")
            volumes.append(types.Volume(
                name=disk.name, claim_name=claim, data_volume=image is not None,
                phase=phase if bound or not importing else importing, bound=bound, progress=None, requested=disk.size, capacity=None,
                access_modes=spec["accessModes"], volume_mode=None, storage_class=spec.get("storageClassName"),
                retain=disk.retain, boot_order=disk.boot_order, bus=disk.bus, message=""))
        waiting = any(not v.bound for v in volumes)
        effects = types.Effects(apply=apply, delete=[], actions=[], conditions=[], events=[],
                                requeue_after_ms=5000 if waiting else None)
        return types.StorageOutcome(effects, volumes)

    def finalize(self, ctx: types.Context, upstream: types.Upstream) -> types.Effects:
        wukong, delete = ctx.wukong, []
        for disk in wukong.disks:
            if disk.retain or isinstance(disk.source, types.DiskSource_ExistingClaim):
                continue
            kind = DATA_VOLUME if isinstance(disk.source, types.DiskSource_Image) else PVC
            name = derived(wukong.name, disk.name)
            if _get(ctx, kind, name) is not None:
                delete.append(types.ObjectRef(kind[0], kind[1], wukong.namespace, name))
        return types.Effects(apply=[], delete=delete, actions=[], conditions=[], events=[], requeue_after_ms=None)
