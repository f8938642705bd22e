"""Derived views of the stored readings: series bucketed in time, aggregated and downsampled."""
