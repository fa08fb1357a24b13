"""Datasets, transforms, synthetic scenes, and the centroid index + sampler."""
