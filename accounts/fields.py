"""A model field for amounts of wei: Python ints, exact in every database we run on."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import models

# 2**256 - 1 has 78 digits: every uint256 the chain can hold fits, and so does any sum of
# balances we could ever add up. A BigIntegerField stops at 2**63 - 1 wei, about 9.2 ETH,
# which one large deposit or the platform's total fees would overflow.
WEI_DIGITS = 78


class WeiField(models.Field):
    """An integer amount of wei, stored as numeric(78, 0) on PostgreSQL and as text on SQLite.

    Not a DecimalField: Django reads SQLite decimals through a 15-significant-digit
    context, so 1_234_567_890_123_456_789 wei would come back rounded. Text keeps every
    digit there; PostgreSQL's numeric is exact. Values are Python ints either way, so money
    arithmetic never meets a float or a Decimal context. Sums and comparisons of amounts
    are done in Python on locked rows, not in SQL, so the SQLite text type costs nothing
    but the order of an admin column.
    """

    description = "An integer amount of wei"

    def db_type(self, connection):
        if connection.vendor == "sqlite":
            return "text"
        return f"numeric({WEI_DIGITS}, 0)"

    def get_internal_type(self):
        return "WeiField"

    def from_db_value(self, value, expression, connection):
        return None if value is None else int(value)

    def to_python(self, value):
        if value is None or isinstance(value, int):
            return value
        try:
            if isinstance(value, Decimal | float):
                if value != int(value):
                    raise ValueError
                return int(value)
            return int(str(value).strip())
        except (TypeError, ValueError):
            raise ValidationError("Enter a whole number of wei.", code="invalid") from None

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return None if value is None else self.to_python(value)

    def get_db_prep_value(self, value, connection, prepared=False):
        if not prepared:
            value = self.get_prep_value(value)
        if value is None or hasattr(value, "as_sql"):
            return value
        if len(str(abs(value))) > WEI_DIGITS:
            raise ValueError(f"{value} wei does not fit in {WEI_DIGITS} digits")
        return str(value) if connection.vendor == "sqlite" else Decimal(value)

    def formfield(self, **kwargs):
        from django import forms

        return super().formfield(**{"form_class": forms.IntegerField, **kwargs})
