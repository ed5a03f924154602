"""How a pool's pod settings combine with the fleet's: one pure function, one rule per field.

- Single values (image, serviceAccountName, automountServiceAccountToken,
  priorityClassName): the pool's when it sets one, the fleet's otherwise.
- Maps (podLabels, podAnnotations, nodeSelector): merged by key; the pool's value wins.
  affinity is a map too: the pool's nodeAffinity, podAffinity or podAntiAffinity replaces
  the fleet's of the same kind.
- Lists whose entries have a name (env, volumes, initContainers, sidecars) and
  volumeMounts (keyed by mountPath): merged by that key; the pool's entry replaces the
  fleet's in place, the pool's others follow the fleet's.
- envFrom and tolerations: the pool's are added after the fleet's (for envFrom a later
  source wins, as in Kubernetes).
- topologySpreadConstraints: the pool's list, when it sets one, replaces the fleet's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from metamapper_operator.model import PodOptions, PodSettings

Entries = tuple[Mapping[str, Any], ...]


def merge_by(key: str, base: Sequence[Mapping[str, Any]], over: Sequence[Mapping[str, Any]]
             ) -> Entries:
    """``base`` with each entry replaced by ``over``'s of the same ``key``, then ``over``'s
    other entries in their order."""
    replacing = {entry.get(key): entry for entry in over}
    known = {entry.get(key) for entry in base}
    return (tuple(replacing.get(entry.get(key), entry) for entry in base)
            + tuple(entry for entry in over if entry.get(key) not in known))


def appended(base: Sequence[Mapping[str, Any]], extra: Sequence[Mapping[str, Any]]) -> Entries:
    """``base`` then the entries of ``extra`` it does not already hold."""
    return tuple(base) + tuple(entry for entry in extra if entry not in base)


def for_pool(fleet: PodOptions, pool: PodSettings) -> PodOptions:
    """The pod settings of one pool's pods: the fleet's, with the pool's merged over them."""
    automount = pool.automount_service_account_token
    return dataclasses.replace(
        fleet,
        image=pool.image or fleet.image,
        env=merge_by("name", fleet.env, pool.env),
        env_from=appended(fleet.env_from, pool.env_from),
        labels={**fleet.labels, **pool.labels},
        annotations={**fleet.annotations, **pool.annotations},
        service_account_name=pool.service_account_name or fleet.service_account_name,
        automount_service_account_token=(fleet.automount_service_account_token
                                         if automount is None else automount),
        node_selector={**fleet.node_selector, **pool.node_selector},
        tolerations=appended(fleet.tolerations, pool.tolerations),
        affinity={**fleet.affinity, **pool.affinity},
        priority_class_name=pool.priority_class_name or fleet.priority_class_name,
        topology_spread_constraints=(fleet.topology_spread_constraints
                                     if pool.topology_spread_constraints is None
                                     else pool.topology_spread_constraints),
        volumes=merge_by("name", fleet.volumes, pool.volumes),
        volume_mounts=merge_by("mountPath", fleet.volume_mounts, pool.volume_mounts),
        init_containers=merge_by("name", fleet.init_containers, pool.init_containers),
        sidecars=merge_by("name", fleet.sidecars, pool.sidecars),
    )
