"""collab: privacy-preserving collaborative AI with verifiable, on-chain settled results."""

__version__ = "0.1.0"
