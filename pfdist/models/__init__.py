"""Model files in: each loader turns a foreign file into a pfdist denoiser. Loaders are leaves:
only the edges (CLI, presets, user code) import them."""
