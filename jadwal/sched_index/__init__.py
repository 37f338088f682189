"""jadwal.sched_index stage."""
