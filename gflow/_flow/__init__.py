"""The gradient flow: flattening, integration, solutions."""
