"""The one root of Inflow's exceptions; each package subclasses it in its own ``exceptions.py``."""


class InflowError(Exception):
    """Root of every error Inflow raises on purpose."""

    retriable: bool = False


class ConfigError(InflowError):
    """Settings or the YAML file are invalid; the message names the offending keys."""


class LocalServiceError(InflowError):
    """A local broker or S3 server could not be fetched, started or stopped."""
