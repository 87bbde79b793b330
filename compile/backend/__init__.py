"""Backend: a folded Relax module in, an artifact folder out — target files, pass settings,
default CPU schedules and intrinsics, the tuning database a build applies, the kernel table,
and the build itself."""
