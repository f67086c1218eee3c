"""latentdiff.core: activations, crosscoders, latent selection and example sampling (tensors live here)."""
