"""podjobs.pods: pod topology, tenant routing and the per-pod runtime (see issue 4)."""
