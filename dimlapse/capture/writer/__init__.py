"""The writer side of capture: ring -> writer (process or thread) -> chunked Zarr store."""
