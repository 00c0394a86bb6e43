"""AttnFlow model: generator, discriminators, losses and the GAN step (pure PyTorch, CPU and GPU).

Nothing here imports Ray, MLflow, DVC or WebDataset; see ``model.gan`` for the training step.
Import from the modules themselves (``model.gan``, ``model.generator``, ...): this file
re-exports nothing, so importing one module never loads the whole package.
"""
