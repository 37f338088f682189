"""jadwal.manifests stage."""
