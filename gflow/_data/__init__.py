"""Datasets: synthetic teachers and scikit-learn's digits."""
