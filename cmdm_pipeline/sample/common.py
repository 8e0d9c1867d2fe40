"""What the sample generator's modules share: the reference date, fast seeded draws and the countries.

Every random choice goes through :func:`pick`, :func:`between` and :class:`Weighted` on a seeded
``random.Random``; every date is relative to :data:`REFERENCE_DATE`.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from itertools import accumulate
from typing import Generic, TypeVar

#: Every date is relative to this day, so output never depends on when it is generated.
REFERENCE_DATE = date(2026, 6, 30)

T = TypeVar("T")


# random.choice and randint draw bits one call at a time; these float-based versions are several
# times faster, which is what makes a million rows affordable.
def pick(rng: random.Random, items: Sequence[T]) -> T:
    """Returns a uniformly random item of ``items``."""
    return items[int(rng.random() * len(items))]


def between(rng: random.Random, low: int, high: int) -> int:
    """Returns a uniformly random integer from ``low`` to ``high`` inclusive."""
    return low + int(rng.random() * (high - low + 1))


class Weighted(Generic[T]):
    """A fixed weighted choice, drawn by bisecting precomputed cumulative weights."""

    def __init__(self, items: Sequence[T], weights: Sequence[float]) -> None:
        self.items = tuple(items)
        self.cumulative = tuple(accumulate(weights))

    def draw(self, rng: random.Random) -> T:
        """Returns one item, with probability proportional to its weight."""
        return self.items[bisect_right(self.cumulative, rng.random() * self.cumulative[-1])]


@dataclass(frozen=True, slots=True)
class CountrySpec:
    """How people, addresses and contact details look in one country."""

    iso2: str
    iso3: str
    locale: str
    weight: float
    names: tuple[str, ...]  # English name first; then the spellings people also type
    tld: str
    house_number: str  # "first" (12 High St), "last" (Hauptstr. 12) or "comma" (Via Roma, 12)
    line2_formats: tuple[str, ...]
    providers: tuple[str, ...]
    trunk_zero: bool  # numbers are written "+44 (0)20 ..." in this country


COUNTRIES: dict[str, CountrySpec] = {
    spec.iso2: spec
    for spec in (
        CountrySpec("GB", "GBR", "en_GB", 0.35, ("United Kingdom", "UK", "Great Britain", "England"), "co.uk",
                    "first", ("Flat {n}", "Flat {n}", "Apartment {n}", "Unit {n}"),
                    ("gmail.com", "hotmail.co.uk", "yahoo.co.uk", "outlook.com", "btinternet.com", "sky.com"), True),
        CountrySpec("US", "USA", "en_US", 0.25, ("United States", "USA", "United States of America", "US"), "com",
                    "first", ("Apt {n}", "Apt {n}{l}", "Suite {n}", "Unit {n}"),
                    ("gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "aol.com", "icloud.com"), False),
        CountrySpec("DE", "DEU", "de_DE", 0.09, ("Germany", "Deutschland"), "de", "last",
                    ("{n}. OG", "App. {n}", "Hinterhaus"), ("gmx.de", "web.de", "t-online.de", "gmail.com"), True),
        CountrySpec("FR", "FRA", "fr_FR", 0.07, ("France",), "fr", "first", ("Appt {n}", "Bât. {l}", "Étage {n}"),
                    ("orange.fr", "free.fr", "laposte.net", "gmail.com", "sfr.fr"), True),
        CountrySpec("ES", "ESP", "es_ES", 0.05, ("Spain", "España"), "es", "comma",
                    ("{n}º {l}", "Piso {n}", "Puerta {n}"),
                    ("gmail.com", "hotmail.es", "yahoo.es", "telefonica.net"), False),
        CountrySpec("NL", "NLD", "nl_NL", 0.05, ("Netherlands", "Holland", "Nederland"), "nl", "last",
                    ("{n}e etage", "Appartement {n}"), ("ziggo.nl", "kpnmail.nl", "gmail.com", "hotmail.nl"), True),
        CountrySpec("IT", "ITA", "it_IT", 0.05, ("Italy", "Italia"), "it", "comma",
                    ("Piano {n}", "Scala {l}", "Interno {n}"),
                    ("libero.it", "gmail.com", "virgilio.it", "alice.it"), False),
        CountrySpec("PL", "POL", "pl_PL", 0.04, ("Poland", "Polska"), "pl", "last", ("m. {n}", "lok. {n}"),
                    ("wp.pl", "onet.pl", "o2.pl", "gmail.com", "interia.pl"), False),
        CountrySpec("SE", "SWE", "sv_SE", 0.03, ("Sweden", "Sverige"), "se", "last", ("Lgh 1{n:03d}", "{n} tr"),
                    ("telia.com", "gmail.com", "hotmail.se", "live.se"), True),
        CountrySpec("IE", "IRL", "en_IE", 0.02, ("Ireland", "Éire"), "ie", "first", ("Apartment {n}", "Flat {n}"),
                    ("eircom.net", "gmail.com", "hotmail.com", "yahoo.ie"), True),
    )
}
COUNTRY_WEIGHTS = Weighted(tuple(COUNTRIES), [spec.weight for spec in COUNTRIES.values()])


def random_date(rng: random.Random, start: date, end: date) -> date:
    """Returns a uniformly random day from ``start`` to ``end`` inclusive."""
    return date.fromordinal(between(rng, start.toordinal(), end.toordinal()))
