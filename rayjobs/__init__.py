"""asit: Activation-Space Intervention Transfer (library; Ray only under rayjobs.jobs)."""

__version__ = "0.1.0"
