"""GPU energy: meters (I/O at the edge) and pure integration/attribution over recorded traces."""
