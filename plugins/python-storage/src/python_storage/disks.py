"""Disks to claims, the same behaviour as the Rust SDK's `disks` module (cdi-storage):
a CDI DataVolume per image disk, a PersistentVolumeClaim per blank disk, an existing
claim used as is.

Guarantees:
- Names are injective over (Wukong, disk): a new disk's claim is
  `names.derived(wukong, disk)`, the Rust SDK's name for it.
- A disk keeps the claim it has (`claim_names`): the one the Wukong's status records,
  else the name of before derived names (`{wukong}-{disk}`) when the object there is this
  Wukong's. An upgrade neither orphans nor re-creates a disk.
- Existing claims are the user's: never applied, never deleted, and no disk of the Wukong
  may make a claim of that name.
- Disks only grow: a larger size applies the larger request to the PVC (KubeVirt grows a
  disk through its PVC, never the DataVolume); a smaller one keeps the claim as it is,
  with `DisksResized=False` (reason `ShrinkRefused`) and a warning event.
- Existing objects are not re-applied unless they must change: a converged Wukong costs
  no write. NB: a DataVolume's spec is immutable once created.
- Finalize deletes only unretained claims carrying the Wukong's labels.

Caveat: CDI adds filesystem overhead to a DataVolume's PVC, so shrinking is judged
against the size Wukong asked for (the size annotation or the DataVolume's request).
"""

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from wit_world.imports import types

from . import names, quantity
from .call import Call, Outcome
from .errors import invalid_spec

DATA_VOLUME_API_VERSION = "cdi.kubevirt.io/v1beta1"
DATA_VOLUME_KIND = "DataVolume"
PVC_KIND = "PersistentVolumeClaim"
STORAGE_CLASS_API_VERSION = "storage.k8s.io/v1"
STORAGE_CLASS_KIND = "StorageClass"
# The size Wukong last asked for, on PVCs it created or grew.
SIZE_ANNOTATION = "vm.novasphere.dev/size"
# On retained disks' claims, written by the plugin: the host gives them no owner
# reference, only its owner-uid mark.
RETAIN_ANNOTATION = "vm.novasphere.dev/retain"
# The uid of the Wukong an object was made for, written by the host (never by a plugin:
# the host refuses an object carrying it); read to recognise a claim of the old name.
OWNER_UID_ANNOTATION = "vm.novasphere.dev/owner-uid"
# CDI imports at once even on a WaitForFirstConsumer class: the VM waits for bound volumes.
BIND_IMMEDIATE_ANNOTATION = "cdi.kubevirt.io/storage.bind.immediate.requested"
VOLUMES_BOUND = "VolumesBound"
DISKS_RESIZED = "DisksResized"
# How soon to look again while a volume is not bound.
REQUEUE_MS = 5_000


@dataclass
class Resize:
    grow: bool
    message: str


@dataclass
class Observed:
    """What the cluster holds for one disk."""

    claim: str
    data_volume: bool
    pvc: Optional[Dict[str, Any]]
    dv: Optional[Dict[str, Any]]
    storage_class: Optional[str]


def claim_name(wukong: str, disk: str) -> str:
    """The name of a new disk's DataVolume or PVC (see `claim_names` for existing ones)."""
    return names.derived(wukong, disk)


def legacy_claim_name(wukong: str, disk: str) -> str:
    """The name claims had before `claim_name`: not injective, kept by the disks that have it."""
    return f"{wukong}-{disk}"


def claim_names(call: Call) -> Dict[str, str]:
    """The claim of every disk, by disk name, as the Rust SDK's `disks::claim_names`: an
    existing claim is its own name; a disk Wukong makes a claim for keeps the one it has:
    1. the claim the Wukong's previous status records for it, when it is a name Wukong
       makes (the derived one, or the legacy one unless the object there is another's);
    2. else the legacy name, when the object there (the DataVolume of an image disk, the
       PVC of a blank one) is this Wukong's (its owner reference or the host's mark);
    3. else `claim_name`."""
    status = call.wukong_json().get("status")
    volumes = status.get("volumes") if isinstance(status, dict) else None
    recorded: Dict[str, str] = {}
    for v in volumes if isinstance(volumes, list) else []:
        if isinstance(v, dict) and isinstance(v.get("name"), str) and isinstance(v.get("claimName"), str):
            recorded.setdefault(v["name"], v["claimName"])
    wukong = call.wukong.name
    claims: Dict[str, str] = {}
    for disk in call.wukong.disks:
        source = disk.source
        if isinstance(source, types.DiskSource_ExistingClaim):
            claims[disk.name] = source.value
            continue
        derived, legacy = claim_name(wukong, disk.name), legacy_claim_name(wukong, disk.name)
        if recorded.get(disk.name) == derived:
            claims[disk.name] = derived
            continue
        if isinstance(source, types.DiskSource_Image):
            at_legacy = call.get(call.object_ref(DATA_VOLUME_API_VERSION, DATA_VOLUME_KIND, legacy))
        else:
            at_legacy = call.get(call.object_ref("v1", PVC_KIND, legacy))
        if at_legacy is None:
            claims[disk.name] = legacy if recorded.get(disk.name) == legacy else derived
        else:
            claims[disk.name] = legacy if made_for(at_legacy, call.wukong.uid) else derived
    return claims


def made_for(obj: Dict[str, Any], uid: str) -> bool:
    """Whether `obj` was made for the Wukong of `uid`: an owner reference to it or the
    host's owner-uid mark with it."""
    if not uid:
        return False
    if _field(obj, "metadata", "annotations", OWNER_UID_ANNOTATION) == uid:
        return True
    owners = _field_any(obj, "metadata", "ownerReferences")
    return isinstance(owners, list) and any(isinstance(o, dict) and o.get("uid") == uid for o in owners)


def _existing_claims(disks: List[types.Disk]) -> List[str]:
    """The claims the spec hands in: the user's, never written or deleted."""
    return [d.source.value for d in disks if isinstance(d.source, types.DiskSource_ExistingClaim)]


def image_source(disk: str, image: str) -> Dict[str, Any]:
    """`docker://` is a registry import, `http(s)://` an http import; else invalid."""
    if image.startswith("docker://"):
        return {"registry": {"url": image}}
    if image.startswith("http://") or image.startswith("https://"):
        return {"http": {"url": image}}
    raise invalid_spec(
        f'disk {disk}: image "{image}" has an unknown scheme: '
        "use docker://registry/image:tag or an http(s):// URL"
    )


def reconcile(call: Call) -> types.StorageOutcome:
    out = Outcome()
    volumes: List[types.Volume] = []
    resizes: List[Resize] = []
    claims = claim_names(call)
    users = _existing_claims(call.wukong.disks)
    for disk in call.wukong.disks:
        claim = claims[disk.name]
        if not isinstance(disk.source, types.DiskSource_ExistingClaim) and claim in users:
            raise invalid_spec(
                f"disk {disk.name}: its claim {claim} is also another disk's existingClaim; "
                "an existing claim is used as is, never made or written by Wukong"
            )
        volume, resize = _reconcile_disk(call, disk, claim, out)
        volumes.append(volume)
        if resize is not None:
            resizes.append(resize)
    _report_bound(volumes, out)
    _report_resizes(resizes, out)
    return types.StorageOutcome(out.effects(), volumes)


def finalize(call: Call) -> types.Effects:
    """Deletes the DataVolumes and PVCs of unretained disks that carry the Wukong's labels,
    under the names `claim_names` gives; never an existing claim, nor an object of its name."""
    out = Outcome()
    claims = claim_names(call)
    users = _existing_claims(call.wukong.disks)
    for disk in call.wukong.disks:
        if disk.retain or isinstance(disk.source, types.DiskSource_ExistingClaim):
            continue
        name = claims[disk.name]
        if name in users:
            continue
        targets = [("v1", PVC_KIND)]
        if isinstance(disk.source, types.DiskSource_Image):
            targets.insert(0, (DATA_VOLUME_API_VERSION, DATA_VOLUME_KIND))
        for api_version, kind in targets:
            target = call.object_ref(api_version, kind, name)
            existing = call.get(target)
            if existing is not None and _carries_labels(existing, call.labels):
                out.delete.append(target)
    return out.effects()


def _reconcile_disk(
    call: Call, disk: types.Disk, claim: str, out: Outcome
) -> Tuple[types.Volume, Optional[Resize]]:
    size = _bytes(disk.name, "size", disk.size)
    source = disk.source
    data_volume = isinstance(source, types.DiskSource_Image)
    if isinstance(source, types.DiskSource_Image):
        image_source(disk.name, source.value)  # refuse a bad image even once imported
    pvc = call.get(call.object_ref("v1", PVC_KIND, claim))
    dv = call.get(call.object_ref(DATA_VOLUME_API_VERSION, DATA_VOLUME_KIND, claim)) if data_volume else None
    storage_class = disk.storage_class or call.config.storage_class
    spec = _storage(disk.size, storage_class, call)
    if isinstance(source, types.DiskSource_Image) and dv is None:
        metadata = _metadata(call, claim, disk, None)
        metadata["annotations"][BIND_IMMEDIATE_ANNOTATION] = "true"
        out.apply_object({
            "apiVersion": DATA_VOLUME_API_VERSION, "kind": DATA_VOLUME_KIND, "metadata": metadata,
            "spec": {"source": image_source(disk.name, source.value), "storage": spec},
        })
    elif isinstance(source, types.DiskSource_Blank) and pvc is None:
        out.apply_object(_claim_object(call, claim, disk, spec))
    seen = Observed(claim, data_volume, pvc, dv, storage_class)
    if isinstance(source, types.DiskSource_ExistingClaim) or pvc is None:
        requested, resize = disk.size, None
    else:
        requested, resize = _resize(call, disk, size, seen, pvc, out)
    volume = _volume(call, disk, requested, seen)
    if not volume.bound:
        out.requeue_after(REQUEUE_MS)
    return volume, resize


def _resize(
    call: Call, disk: types.Disk, size: int, seen: Observed, pvc: Dict[str, Any], out: Outcome
) -> Tuple[str, Optional[Resize]]:
    """Grows the claim when the spec asks for more than its request; refuses to shrink it
    below what Wukong asked for. Returns the size in effect."""
    current = _field(pvc, "spec", "resources", "requests", "storage") or ""
    asked = (
        _field(pvc, "metadata", "annotations", SIZE_ANNOTATION)
        or _field(seen.dv, "spec", "storage", "resources", "requests", "storage")
        or current
    )
    name = disk.name
    if size < _bytes(name, "claim request", asked):
        message = (
            f"disk {name}: size {disk.size} is smaller than its claim's {asked}; "
            f"disks never shrink, keeping {asked}"
        )
        return asked, Resize(False, message)
    current_bytes = quantity.to_bytes(current)
    if current_bytes is not None and size <= current_bytes:
        return disk.size, None
    spec: Dict[str, Any] = {"resources": {"requests": {"storage": disk.size}}}
    if not seen.data_volume:
        # A blank disk's PVC is Wukong's: under server-side apply a field left out is
        # removed, so apply the fields of its creation again, immutable ones as they are.
        # A DataVolume's PVC is CDI's: apply only the request.
        existing = pvc.get("spec")
        full = copy.deepcopy(existing) if isinstance(existing, dict) else {}
        full["resources"] = spec["resources"]
        for filled_by_server in ("volumeName", "dataSource", "dataSourceRef"):
            full.pop(filled_by_server, None)
        spec = full
    out.apply_object(_claim_object(call, seen.claim, disk, spec))
    return disk.size, Resize(True, f"disk {name}: expanding from {current} to {disk.size}")


def _storage(size: str, storage_class: Optional[str], call: Call) -> Dict[str, Any]:
    """`spec.storage` of a DataVolume, also the spec of a blank PVC: the same shape."""
    storage: Dict[str, Any] = {
        "accessModes": list(call.config.access_modes),
        "resources": {"requests": {"storage": size}},
        "volumeMode": call.config.volume_mode,
    }
    if storage_class is not None:
        storage["storageClassName"] = storage_class
    return storage


def _claim_object(call: Call, name: str, disk: types.Disk, spec: Dict[str, Any]) -> Dict[str, Any]:
    size = _field(spec, "resources", "requests", "storage")
    return {
        "apiVersion": "v1", "kind": PVC_KIND,
        "metadata": _metadata(call, name, disk, size), "spec": spec,
    }


def _metadata(call: Call, name: str, disk: types.Disk, size: Optional[str]) -> Dict[str, Any]:
    metadata = call.metadata(name)
    annotations: Dict[str, str] = {}
    if size is not None:
        annotations[SIZE_ANNOTATION] = size
    if disk.retain:
        annotations[RETAIN_ANNOTATION] = "true"
    metadata["annotations"] = annotations
    return metadata


def _volume(call: Call, disk: types.Disk, requested: str, seen: Observed) -> types.Volume:
    """Bound once the PVC is (and, for an image, the import succeeded); otherwise the
    DataVolume's or PVC's phase and why it waits."""
    pvc, dv, claim = seen.pvc, seen.dv, seen.claim
    pvc_phase, dv_phase = _field(pvc, "status", "phase"), _field(dv, "status", "phase")
    bound = pvc_phase == "Bound" and (not seen.data_volume or dv_phase == "Succeeded")
    phase = "Bound" if bound else (dv_phase or pvc_phase or "Pending")
    progress = _field(dv, "status", "progress")
    if bound or progress == "N/A":
        progress = None
    if bound:
        message = ""
    elif isinstance(disk.source, types.DiskSource_ExistingClaim) and pvc is None:
        phase = "Missing"
        message = f"PersistentVolumeClaim {claim} does not exist"
    elif dv is not None and dv_phase == "Failed":
        reason = _condition_message(dv, "Running") or "import failed"
        message = f"DataVolume {claim} failed: {reason}"
    elif pvc_phase == "Lost":
        message = f"PersistentVolumeClaim {claim} lost its volume"
    elif pvc is not None and pvc_phase == "Pending":
        phase, message = _pending_reason(call, pvc, phase)
    elif progress is not None:
        message = f"importing: {progress}"
    else:
        message = f"waiting for {claim}"
    modes = _field_any(pvc, "spec", "accessModes")
    access_modes = (
        [m for m in modes if isinstance(m, str)] if isinstance(modes, list) else list(call.config.access_modes)
    )
    return types.Volume(
        name=disk.name,
        claim_name=claim,
        data_volume=seen.data_volume,
        phase=phase,
        bound=bound,
        progress=progress,
        requested=requested,
        capacity=_field(pvc, "status", "capacity", "storage"),
        access_modes=access_modes,
        volume_mode=_field(pvc, "spec", "volumeMode") or call.config.volume_mode,
        storage_class=_field(pvc, "spec", "storageClassName") or seen.storage_class,
        retain=disk.retain,
        boot_order=disk.boot_order,
        bus=disk.bus,
        message=message,
    )


def _pending_reason(call: Call, pvc: Dict[str, Any], phase: str) -> Tuple[str, str]:
    """Why a PVC is pending: its class binds on first consumer, or does not exist."""
    class_name = _field(pvc, "spec", "storageClassName")
    if class_name is None:
        return phase, "waiting for a volume"
    storage_class = call.get_cluster_scoped(STORAGE_CLASS_API_VERSION, STORAGE_CLASS_KIND, class_name)
    if storage_class is None:
        return phase, f"StorageClass {class_name} does not exist"
    if storage_class.get("volumeBindingMode") == "WaitForFirstConsumer":
        return "WaitForFirstConsumer", f"StorageClass {class_name} binds when the VM is scheduled"
    return phase, f"waiting for StorageClass {class_name} to provide a volume"


def _report_bound(volumes: List[types.Volume], out: Outcome) -> None:
    waiting = [
        f"{v.name}: {v.phase} ({v.message})" if v.message else f"{v.name}: {v.phase}"
        for v in volumes
        if not v.bound
    ]
    if not waiting:
        out.condition(VOLUMES_BOUND, True, "Bound", f"{len(volumes)} volume(s) bound")
        return
    failed = any(v.phase in ("Failed", "Lost", "Missing") for v in volumes)
    out.condition(VOLUMES_BOUND, False, "Failed" if failed else "Pending", "; ".join(waiting))


def _report_resizes(resizes: List[Resize], out: Outcome) -> None:
    refused = [r.message for r in resizes if not r.grow]
    grown = [r.message for r in resizes if r.grow]
    for message in grown:
        out.event("DiskExpanding", message)
    if refused:
        out.warning("DiskShrinkRefused", "; ".join(refused))
        out.condition(DISKS_RESIZED, False, "ShrinkRefused", "; ".join(refused))
    elif grown:
        out.condition(DISKS_RESIZED, True, "Expanding", "; ".join(grown))
    else:
        out.condition(DISKS_RESIZED, True, "AsRequested", "every disk has its requested size")


def _bytes(disk: str, what: str, value: str) -> int:
    size = quantity.to_bytes(value)
    if size is None:
        raise invalid_spec(f'disk {disk}: {what} "{value}" is not a quantity (e.g. 20Gi)')
    return size


def _carries_labels(obj: Dict[str, Any], labels: Dict[str, str]) -> bool:
    have = _field_any(obj, "metadata", "labels")
    have = have if isinstance(have, dict) else {}
    return all(have.get(key) == value for key, value in labels.items())


def _condition_message(obj: Dict[str, Any], condition_type: str) -> Optional[str]:
    conditions = _field_any(obj, "status", "conditions")
    for c in conditions if isinstance(conditions, list) else []:
        if isinstance(c, dict) and c.get("type") == condition_type:
            message = c.get("message")
            return message if isinstance(message, str) and message else None
    return None


def _field_any(obj: Optional[Dict[str, Any]], *path: str) -> Any:
    """The value at `path` in nested dicts; None where any step is missing."""
    value: Any = obj
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _field(obj: Optional[Dict[str, Any]], *path: str) -> Optional[str]:
    """A string field at `path`; None when missing or not a string."""
    value = _field_any(obj, *path)
    return value if isinstance(value, str) else None
