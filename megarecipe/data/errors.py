"""The data layer's error type (defined with the others in megarecipe/errors.py)."""

from megarecipe.errors import DataError

__all__ = ["DataError"]
