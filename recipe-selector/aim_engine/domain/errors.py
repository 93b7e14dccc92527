"""The two error families: malformed input, and a policy that refuses."""

from __future__ import annotations


class AimError(Exception):
    """Base class for errors aim-engine reports to the user (never shown as a traceback)."""


class InputError(AimError):
    """Input that cannot be understood: a bad file, a bad flag value, a malformed object."""


class PolicyError(AimError):
    """Input understood, but refused: an override the hardware cannot honour, nothing fits."""
