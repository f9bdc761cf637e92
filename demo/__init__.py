"""`make demo`: a local 3-pod cluster, a small workload on real workers, then teardown."""
