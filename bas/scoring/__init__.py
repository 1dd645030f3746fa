"""Scores of generated images: prompt similarity, identity similarity, NSIM-D, CS, CLIP-I."""
