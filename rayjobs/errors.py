"""Errors the user can cause and fix."""


class UserError(Exception):
    """A mistake the user can fix; str() is one line naming the field, the value, what is allowed and the fix."""
