"""Model files in: each loader turns a foreign file into a pfdist denoiser. Loaders are leaves:
only the edges (CLI, presets, :func:`pfdist.specs.load_spec`, user code) import them."""
