"""The paper's four claims as named, versioned experiments (configs/*.toml)."""
