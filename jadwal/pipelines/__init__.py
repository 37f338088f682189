"""jadwal.pipelines stage."""
