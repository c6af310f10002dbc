"""discodance: dance generation from video or motion capture with a discrete-latent VAE."""
__version__ = "0.1.0"
