"""Framework adapters: each imports the core and its own framework only."""
