"""The generation grid: templates x token subsets x seeds, the sampler, the manifest."""
