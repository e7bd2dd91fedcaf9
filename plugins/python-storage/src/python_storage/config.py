"""The plugin's config: its JSON Schema (published in the manifest, checked by the host)
and the same rules checked again here, so a config that slips past gives a clear error."""

import json
from dataclasses import dataclass, field
from typing import List, Optional

from .errors import invalid_config

ACCESS_MODES = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]
VOLUME_MODES = ["Filesystem", "Block"]

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Config",
    "description": "python-storage: one claim per disk on any storage class.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "storageClass": {
            "description": "StorageClass for disks that name none; the cluster's default class when absent.",
            "type": ["string", "null"],
            "default": None,
        },
        "accessModes": {
            "description": "Access modes of every claim.",
            "type": "array",
            "items": {"type": "string", "enum": ACCESS_MODES},
            "minItems": 1,
            "default": ["ReadWriteOnce"],
        },
        "volumeMode": {
            "description": "`Filesystem` or `Block`.",
            "type": "string",
            "enum": VOLUME_MODES,
            "default": "Filesystem",
        },
    },
}


@dataclass(frozen=True)
class Config:
    """What the host config says about this backend's claims."""

    storage_class: Optional[str] = None
    access_modes: List[str] = field(default_factory=lambda: ["ReadWriteOnce"])
    volume_mode: str = "Filesystem"


def parse(raw: str) -> Config:
    """Parses the config JSON; an empty string is the empty config."""
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError as e:
        raise invalid_config(f"config: not JSON: {e}")
    if not isinstance(value, dict):
        raise invalid_config("config: expected an object")
    known = list(SCHEMA["properties"])
    for key in value:
        if key not in known:
            expected = ", ".join(f"`{k}`" for k in known)
            raise invalid_config(f"config: unknown field `{key}`, expected one of {expected}")
    storage_class = value.get("storageClass")
    if storage_class is not None and not isinstance(storage_class, str):
        raise invalid_config("config: storageClass: expected a string")
    access_modes = value.get("accessModes", ["ReadWriteOnce"])
    if (
        not isinstance(access_modes, list)
        or not access_modes
        or any(mode not in ACCESS_MODES for mode in access_modes)
    ):
        raise invalid_config(f"config: accessModes: expected a non-empty list of {ACCESS_MODES}")
    volume_mode = value.get("volumeMode", "Filesystem")
    if volume_mode not in VOLUME_MODES:
        raise invalid_config(f"config: volumeMode: expected one of {VOLUME_MODES}")
    return Config(storage_class=storage_class, access_modes=list(access_modes), volume_mode=volume_mode)
