"""Models from the paper, as equinox Modules."""
