"""The model registry's names and where each model lives, without importing torch: the CLI's --help and
--model choices read this; models/__init__.py imports the classes into REGISTRY."""

MODELS = {  # name -> (module in discodance.models, class), in the order users see them
    "gumbel-vae": ("gumbel_vae", "GumbelVAE"),         # the report's discrete-latent VAE and its re-encoding chain
    "code-prior": ("code_prior", "CodePrior"),         # a learned prior over a trained gumbel-vae's codes
    "vae-lstm-mdn": ("vae_lstm_mdn", "VAELSTMMDN"),    # DanceNet: Gaussian VAE + LSTM + mixture density head
    "gan": ("gan", "GAN"),                             # conditional next-frame GAN (spectral norm, hinge loss)
    "vrnn": ("vrnn", "VRNN"),                          # Chung et al. 2015
    "lstm-ae": ("lstm_ae", "LSTMAE"),                  # Srivastava et al. 2015, composite model
}
