"""Data that ship with pfdist (or with its optional extras)."""

from pfdist.data.digits import digits_mixture, load_digit_labels, load_digits, ppca

__all__ = ["digits_mixture", "load_digit_labels", "load_digits", "ppca"]
