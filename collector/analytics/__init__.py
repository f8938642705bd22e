"""Manufacturing analytics: the equipment model, and series bucketed, aggregated, downsampled."""
