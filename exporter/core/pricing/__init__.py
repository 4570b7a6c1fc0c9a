"""Pricing: genai-prices compiled into a fast lookup, an override file, exact integer money.

- :mod:`.rates`: the formula and the money unit (atto-dollars, exact integers)
- :mod:`.schedule`: a model's prices by date, time of day and service tier
- :mod:`.source`: the shipped source (genai-prices' bundled data)
- :mod:`.overrides`: the ``pricing.file`` format
- :mod:`.matching`: model reference → canonical model, honestly
- :mod:`.book`: the precedence (cost_usd > sku > price > unpriced), the one entry point
"""

from .book import PriceBook, build_book, load_price_book
from .overrides import PricingError
from .rates import UNITS_PER_USD, to_units, usd
from .schedule import Schedule

__all__ = ["PriceBook", "PricingError", "Schedule", "UNITS_PER_USD", "build_book", "load_price_book", "to_units",
           "usd"]
