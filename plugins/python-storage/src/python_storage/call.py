"""One step call as the plugin sees it: the Wukong, the parsed config, reads through the
host's `cluster` import, and the outcome being built."""

import json
from typing import Any, Dict, List, Optional

from componentize_py_types import Err
from wit_world.imports import cluster, types

from . import config as plugin_config
from .errors import cluster_error


class Call:
    """The Wukong, the config and cluster reads for one `reconcile` or `finalize`."""

    def __init__(self, ctx: types.Context):
        self.wukong = ctx.wukong
        self.config = plugin_config.parse(ctx.config)
        # Sorted like the Rust SDK's BTreeMap: the same input gives the same JSON.
        self.labels: Dict[str, str] = dict(sorted(ctx.wukong.labels))

    def wukong_json(self) -> Dict[str, Any]:
        """The Wukong's whole object (status included); `{}` when it does not parse."""
        try:
            value = json.loads(self.wukong.json)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def object_ref(self, api_version: str, kind: str, name: str) -> types.ObjectRef:
        """A reference to an object in the Wukong's namespace."""
        return types.ObjectRef(api_version, kind, self.wukong.namespace, name)

    def get(self, target: types.ObjectRef) -> Optional[Dict[str, Any]]:
        """One object as a dict, None when it does not exist."""
        try:
            text = cluster.get(target)
        except Err as e:
            raise cluster_error(str(e.value))
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError as e:
            raise cluster_error(f"{target.kind} {target.name}: unexpected object: {e}")
        if not isinstance(value, dict):
            raise cluster_error(f"{target.kind} {target.name}: unexpected object: not a JSON object")
        return value

    def get_cluster_scoped(self, api_version: str, kind: str, name: str) -> Optional[Dict[str, Any]]:
        """One cluster-scoped object (a StorageClass)."""
        return self.get(types.ObjectRef(api_version, kind, None, name))

    def metadata(self, name: str) -> Dict[str, Any]:
        """Metadata of an object of this Wukong: its name, namespace and labels."""
        return {"name": name, "namespace": self.wukong.namespace, "labels": dict(self.labels)}


class Outcome:
    """Effects being built: objects to apply and delete, conditions, events, requeue."""

    def __init__(self) -> None:
        self.apply: List[str] = []
        self.delete: List[types.ObjectRef] = []
        self.conditions: List[types.Condition] = []
        self.events: List[types.Event] = []
        self.requeue_after_ms: Optional[int] = None

    def apply_object(self, obj: Dict[str, Any]) -> None:
        self.apply.append(json.dumps(obj, separators=(",", ":")))

    def condition(self, condition_type: str, ok: bool, reason: str, message: str) -> None:
        status = "True" if ok else "False"
        self.conditions.append(types.Condition(condition_type, status, reason, message))

    def event(self, reason: str, message: str) -> None:
        self.events.append(types.Event(False, reason, message))

    def warning(self, reason: str, message: str) -> None:
        self.events.append(types.Event(True, reason, message))

    def requeue_after(self, ms: int) -> None:
        """Asks to be called again; the smallest request wins."""
        current = self.requeue_after_ms
        self.requeue_after_ms = ms if current is None else min(current, ms)

    def effects(self) -> types.Effects:
        return types.Effects(
            self.apply, self.delete, [], self.conditions, self.events, self.requeue_after_ms
        )
