"""Greedy layer-wise pretraining (RBMs, denoising autoencoders) and the fine-tuning initialisation it feeds."""
