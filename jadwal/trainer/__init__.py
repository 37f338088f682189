"""jadwal.trainer stage."""
