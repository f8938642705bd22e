"""Manufacturing analytics: the equipment model, and (later) what is derived from it."""
