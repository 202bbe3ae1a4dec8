"""Answer quality: standard image-to-text metrics (pure) and the 80 % gate with confidence."""
