"""jadwal.shards stage."""
