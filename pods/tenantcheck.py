"""The worker-side tenant check: a job runs only on its tenant's pod.

Before a job that names a tenant runs, the worker asks its cached directory:
- the tenant lives on this pod: run it;
- it lives on another pod: forward the job to that pod's queue (written there
  first, then acked here), so nothing of tenant A ever touches another shard;
- it is unknown (deleted from the directory): dead set with the reason.
"""

from __future__ import annotations

from typing import Any

from podjobs.executor import Forward, Refuse

from .router import Router


class TenantCheck:
    def __init__(self, router: Router, pod: str) -> None:
        self.router = router
        self.pod = pod

    def __call__(self, data: dict[str, Any]) -> Forward | Refuse | None:
        tenant = data["tenant"]
        entry = self.router.directory.tenant(tenant)
        if entry is None:
            return Refuse("unknown_tenant",
                          f"tenant {tenant!r} is not in the directory; the job was not run on pod "
                          f"{self.pod}. Assign the tenant, then retry the job from the dead set")
        if entry.pod == self.pod:
            return None
        return Forward(entry.pod)

    def forward(self, pod: str, queue: str, data: dict[str, Any]) -> None:
        from podjobs.payload import encode

        self.router.backend(pod).enqueue(queue, [encode(data, 1 << 30)])
