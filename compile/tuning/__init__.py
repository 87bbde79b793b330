"""Tuning: MetaSchedule search over a folded model's kernels, measured on this host or on the
devices behind an RPC tracker, recorded in the target's tuning log (`compile.backend.tuning_db`)."""
