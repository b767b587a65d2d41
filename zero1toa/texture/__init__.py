"""The head's texture atlas: sampling the photo, completing the unseen rest (symmetry, synthesis)."""
