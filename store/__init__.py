"""latentdiff.store: the Chroma store of latent examples and findings."""
