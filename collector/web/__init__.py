"""The plant dashboard: its built files (from dashboard/) and the routes that serve them."""
