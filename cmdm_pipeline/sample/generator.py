"""Seeded generator of realistic, overlapping, deliberately dirty customer data.

Writes five source files (CRM, ERP, web shop, POS/loyalty, NPS survey) and
``truth/ground_truth.csv`` mapping every source row to the true person and organisation::

    uv run python -m cmdm_pipeline.sample --records 10000 --seed 42 --out data/sample

The same ``--records`` and ``--seed`` always give byte-identical files: every random choice
comes from ``random.Random`` instances seeded from the seed (never the global generator),
Faker instances are seeded with ``seed_instance``, and all dates are anchored to
:data:`REFERENCE_DATE`, never the wall clock.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import string
import time
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Any, Generic, TypeVar

import phonenumbers
from faker import Faker
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from stdnum import luhn
from stdnum.gb import vat as gb_vat
from stdnum.ie import vat as ie_vat

#: Every date is relative to this day, so output never depends on when it is generated.
REFERENCE_DATE = date(2026, 6, 30)

SOURCE_FILES: dict[str, str] = {
    "crm": "crm_contacts.csv",
    "erp": "erp_customers.csv",
    "shop": "shop_customers.jsonl",
    "pos": "pos_loyalty.csv",
    "survey": "survey_nps.csv",
}
TRUTH_FILE = Path("truth") / "ground_truth.csv"
TRUTH_COLUMNS = ("source_system", "source_record_id", "person_id", "organisation_id")

CRM_COLUMNS = (
    "Id", "Status", "FirstName", "LastName", "Company", "Title", "Email", "Phone", "MobilePhone",
    "MailingStreet", "MailingCity", "MailingState", "MailingPostalCode", "MailingCountry", "CreatedDate",
)
ERP_COLUMNS = (
    "KUNNR", "ACCOUNT_TYPE", "COMPANY_NAME", "LAST_NAME", "FIRST_NAME", "BIRTH_DT", "STREET",
    "POST_CODE", "CITY", "REGION", "COUNTRY", "TEL", "EMAIL", "VAT_ID", "CREATED_ON",
)
SHOP_KEYS = (
    "customer_id", "email", "first_name", "last_name", "phone", "date_of_birth", "gender",
    "billing_address", "created_at", "accepts_marketing",
)
SHOP_ADDRESS_KEYS = ("line1", "line2", "city", "region", "postal_code", "country")
POS_COLUMNS = (
    "CardNo", "Forename", "Surname", "DOB", "Email", "Mobile", "PostCode", "Country", "Tier",
    "StoreId", "JoinDate",
)
SURVEY_COLUMNS = (
    "ResponseId", "RespondentEmail", "FirstName", "LastName", "Country", "Score", "RespondedAt", "Comment",
)
COLUMNS: dict[str, tuple[str, ...]] = {
    "crm": CRM_COLUMNS, "erp": ERP_COLUMNS, "shop": SHOP_KEYS, "pos": POS_COLUMNS, "survey": SURVEY_COLUMNS,
}
ID_COLUMNS = {"crm": "Id", "erp": "KUNNR", "shop": "customer_id", "pos": "CardNo", "survey": "ResponseId"}
DELIMITERS = {"crm": ",", "erp": ";", "pos": ",", "survey": ","}

#: The one spreadsheet-formula value planted in a name field (CSV injection probe).
FORMULA_VALUE = "=cmd|' /C calc'!A0"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

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
GENDERS = Weighted(("female", "male", "other"), (0.49, 0.495, 0.015))
HOUSEHOLD_EXTRA_MEMBERS = Weighted((1, 2, 3), (0.6, 0.25, 0.15))
NPS_SCORES = Weighted(range(11), (2, 1, 1, 2, 2, 4, 6, 10, 18, 24, 30))

# Real towns with their county and postcode area, so GB postcodes agree with the town.
GB_PLACES = (
    ("London", "Greater London", "SW"), ("London", "Greater London", "E"), ("London", "Greater London", "N"),
    ("London", "Greater London", "NW"), ("London", "Greater London", "SE"), ("Manchester", "Greater Manchester", "M"),
    ("Birmingham", "West Midlands", "B"), ("Leeds", "West Yorkshire", "LS"), ("Liverpool", "Merseyside", "L"),
    ("Bristol", "Bristol", "BS"), ("Sheffield", "South Yorkshire", "S"), ("Newcastle upon Tyne", "Tyne and Wear", "NE"),
    ("Nottingham", "Nottinghamshire", "NG"), ("Leicester", "Leicestershire", "LE"), ("Edinburgh", "Midlothian", "EH"),
    ("Glasgow", "Lanarkshire", "G"), ("Cardiff", "South Glamorgan", "CF"), ("Brighton", "East Sussex", "BN"),
    ("Oxford", "Oxfordshire", "OX"), ("Cambridge", "Cambridgeshire", "CB"), ("Reading", "Berkshire", "RG"),
    ("York", "North Yorkshire", "YO"), ("Norwich", "Norfolk", "NR"), ("Exeter", "Devon", "EX"),
    ("Southampton", "Hampshire", "SO"), ("Belfast", "County Antrim", "BT"), ("Milton Keynes", "Buckinghamshire", "MK"),
    ("Coventry", "West Midlands", "CV"), ("Bath", "Somerset", "BA"), ("Aberdeen", "Aberdeenshire", "AB"),
    ("Stoke-on-Trent", "Staffordshire", "ST"), ("Derby", "Derbyshire", "DE"),
)
# Real cities with state name, state code and ZIP prefix, so US ZIPs agree with the state.
US_PLACES = (
    ("New York", "New York", "NY", "100"), ("Brooklyn", "New York", "NY", "112"),
    ("Los Angeles", "California", "CA", "900"), ("San Diego", "California", "CA", "921"),
    ("San Francisco", "California", "CA", "941"), ("Chicago", "Illinois", "IL", "606"),
    ("Houston", "Texas", "TX", "770"), ("Dallas", "Texas", "TX", "752"),
    ("Austin", "Texas", "TX", "787"), ("Phoenix", "Arizona", "AZ", "850"),
    ("Philadelphia", "Pennsylvania", "PA", "191"), ("Pittsburgh", "Pennsylvania", "PA", "152"),
    ("Seattle", "Washington", "WA", "981"), ("Denver", "Colorado", "CO", "802"),
    ("Boston", "Massachusetts", "MA", "021"), ("Atlanta", "Georgia", "GA", "303"),
    ("Miami", "Florida", "FL", "331"), ("Orlando", "Florida", "FL", "328"),
    ("Portland", "Oregon", "OR", "972"), ("Minneapolis", "Minnesota", "MN", "554"),
    ("Columbus", "Ohio", "OH", "432"), ("Charlotte", "North Carolina", "NC", "282"),
    ("Nashville", "Tennessee", "TN", "372"), ("Detroit", "Michigan", "MI", "482"),
    ("Baltimore", "Maryland", "MD", "212"), ("Las Vegas", "Nevada", "NV", "891"),
    ("Newark", "New Jersey", "NJ", "071"),
)
GB_POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"

NICKNAMES: dict[str, tuple[str, ...]] = {
    "Robert": ("Bob", "Rob", "Bobby"), "William": ("Bill", "Will", "Billy"), "Elizabeth": ("Liz", "Beth", "Lizzie"),
    "Katherine": ("Kate", "Kathy"), "Catherine": ("Cathy", "Kate"), "Margaret": ("Maggie", "Peggy"),
    "Richard": ("Rick", "Dick", "Rich"), "James": ("Jim", "Jimmy", "Jamie"), "John": ("Jack", "Johnny"),
    "Michael": ("Mike", "Mick"), "Thomas": ("Tom", "Tommy"), "Joseph": ("Joe",), "Charles": ("Charlie", "Chuck"),
    "Christopher": ("Chris",), "Daniel": ("Dan", "Danny"), "Matthew": ("Matt",), "Anthony": ("Tony",),
    "Edward": ("Ed", "Ted", "Eddie"), "Alexander": ("Alex",), "Benjamin": ("Ben",), "Samuel": ("Sam",),
    "Jonathan": ("Jon",), "Nicholas": ("Nick",), "Patrick": ("Pat", "Paddy"), "Jennifer": ("Jen", "Jenny"),
    "Rebecca": ("Becky", "Becca"), "Susan": ("Sue", "Susie"), "Deborah": ("Debbie", "Deb"),
    "Victoria": ("Vicky", "Tori"), "Patricia": ("Pat", "Trish"), "Jessica": ("Jess",), "Samantha": ("Sam",),
    "Alexandra": ("Alex",), "Johannes": ("Hans",), "Margarethe": ("Grete",), "Friedrich": ("Fritz",),
    "Elisabeth": ("Lisa", "Sissi"), "Wolfgang": ("Wolf",), "Frédéric": ("Fred",), "Christophe": ("Chris",),
    "Nathalie": ("Nath",), "Francisco": ("Paco",), "José": ("Pepe",), "Dolores": ("Lola",), "Manuel": ("Manolo",),
    "Giuseppe": ("Peppe",), "Francesco": ("Franco",), "Aleksandra": ("Ola",), "Małgorzata": ("Gosia",),
}
# Formal names that have nicknames, planted in each locale's pool so nicknames actually occur.
FORMAL_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (("Elizabeth", "Katherine", "Catherine", "Margaret", "Jennifer", "Rebecca", "Susan", "Deborah",
            "Victoria", "Patricia", "Jessica", "Samantha", "Alexandra"),
           ("Robert", "William", "Richard", "James", "John", "Michael", "Thomas", "Joseph", "Charles",
            "Christopher", "Daniel", "Matthew", "Anthony", "Edward", "Alexander", "Benjamin", "Samuel",
            "Jonathan", "Nicholas", "Patrick")),
    "de": (("Margarethe", "Elisabeth"), ("Johannes", "Friedrich", "Wolfgang")),
    "fr": (("Nathalie",), ("Frédéric", "Christophe")),
    "es": (("Dolores",), ("Francisco", "José", "Manuel")),
    "it": ((), ("Giuseppe", "Francesco")),
    "pl": (("Aleksandra", "Małgorzata"), ()),
}
BUSINESS_TITLES = (
    "Head of Procurement", "Purchasing Manager", "CFO", "Finance Director", "Operations Manager", "Buyer",
    "IT Director", "Office Manager", "Managing Director", "Accounts Payable Clerk", "Facilities Manager",
    "Head of Marketing", "Category Manager", "Senior Buyer", "COO",
)
STREET_ABBREVIATIONS = (
    (" Street", " St"), (" Road", " Rd"), (" Avenue", " Ave"), (" Lane", " Ln"), (" Drive", " Dr"),
    ("straße", "str."), ("Straße", "Str."), ("rue ", "r. "), ("Via ", "V. "), ("Calle ", "C/ "), ("ulica ", "ul. "),
)
COMPANY_SUFFIXES = (
    " Ltd", " Limited", " PLC", " plc", " LLC", " Inc", " Group", " and Sons", " GmbH", " AG", " KG", " S.A.",
    " S.L.", " SPA", " S.p.A.", " BV", " N.V.", " AB", " s.c.", " Sp.k.", " S.A.R.L.", " SARL", " SAS", " SA",
    " e.V.", " GmbH & Co. KG", " Inc.", " and Daughters", " Sp. z o.o.", " S.r.l.", " s.r.l.",
)
COMMENTS = {
    "detractor": (
        "Delivery took far too long.", "Nobody answered the phone, twice.", "Prices went up again",
        "Item arrived damaged, refund still pending", "The app keeps logging me out", "Too many marketing emails!",
        "Queue at the till was ridiculous", "Wrong size sent, returns are a pain", "Customer service did not help",
    ),
    "passive": (
        "OK overall", "Good, but checkout is slow", "Fine.", "Decent range, could be cheaper",
        "Staff were helpful, queue was long", "Website is a bit confusing", "ok", "Not bad",
    ),
    "promoter": (
        "Great service, fast delivery!", "Love the loyalty points", "Always helpful staff :)",
        "Brilliant, would recommend to friends", "Super Service, danke!", "Très bon accueil",
        "Excelente atención", 'They said "no problem" and fixed it', "10/10", "Quick & easy as always",
    ),
}
KEYBOARD_NEIGHBOURS = {
    "a": "qwsz", "b": "vghn", "c": "xdfv", "d": "serfcx", "e": "wsdr", "f": "drtgvc", "g": "ftyhbv", "h": "gyujnb",
    "i": "ujko", "j": "huikmn", "k": "jiolm", "l": "kop", "m": "njk", "n": "bhjm", "o": "iklp", "p": "ol",
    "q": "wa", "r": "edft", "s": "awedxz", "t": "rfgy", "u": "yhji", "v": "cfgb", "w": "qase", "x": "zsdc",
    "y": "tghu", "z": "asx",
}
_FOLD_EXTRA = str.maketrans({
    "ß": "ss", "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "đ": "d", "Đ": "D", "œ": "oe", "Œ": "OE",
})


# --------------------------------------------------------------------------------------------
# Entities


@dataclass(frozen=True, slots=True)
class Address:
    """A postal address; ``region_code`` is the US state code, else the region again."""

    line1: str
    line2: str
    city: str
    region: str
    region_code: str
    postcode: str
    country: str


@dataclass(frozen=True, slots=True)
class Phone:
    """One phone number in the three layouts sources write."""

    region: str
    e164: str
    international: str
    national: str


@dataclass(frozen=True, slots=True)
class Home:
    """What members of one household share."""

    last_name: str
    address: Address
    old_address: Address | None
    landline: Phone | None


@dataclass(slots=True)
class Organisation:
    """A true organisation (B2B customer)."""

    org_id: str
    country: str
    name: str
    domain: str
    vat_id: str
    address: Address
    phone: Phone
    has_erp_account: bool
    contact: Person | None = None


@dataclass(slots=True)
class Person:
    """A true person and the source rows they will appear in (``plan``, repeats allowed)."""

    person_id: str
    country: str
    first_name: str
    middle_name: str
    last_name: str
    gender: str
    dob: date
    email: str
    old_email: str
    mobile: Phone
    home: Home
    organisation: Organisation | None = None
    job_title: str = ""
    work_email: str = ""
    plan: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Row:
    """One source row and who it truly is."""

    values: dict[str, Any]
    person_id: str
    organisation_id: str


# --------------------------------------------------------------------------------------------
# Text noise


@lru_cache(maxsize=65536)
def fold_accents(text: str) -> str:
    """Returns ``text`` with accents removed (José -> Jose, Łódź -> Lodz, Straße -> Strasse)."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD_EXTRA))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@lru_cache(maxsize=65536)
def slug(text: str) -> str:
    """Returns lower-case ASCII letters and digits of ``text``, as used in e-mail local parts."""
    return "".join(ch for ch in fold_accents(text).lower() if ch.isascii() and ch.isalnum())


class Dirt:
    """Seeded corruption of values, the way people and old systems corrupt them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def chance(self, probability: float) -> bool:
        """Returns True with the given probability."""
        return self.rng.random() < probability

    def blank(self, value: str, probability: float) -> str:
        """Returns ``value``, or "" with the given probability (a field left empty)."""
        return "" if self.rng.random() < probability else value

    def typo(self, text: str) -> str:
        """Returns ``text`` with one or two keyboard slips (swap, drop, double or neighbour key)."""
        chars = list(text)
        for _ in range(1 if self.rng.random() < 0.8 else 2):
            letters = [i for i, ch in enumerate(chars) if ch.isalpha()][1:]  # first letters are rarely wrong
            if len(letters) < 2:
                break
            self._slip(chars, pick(self.rng, letters))
        return "".join(chars)

    def _slip(self, chars: list[str], i: int) -> None:
        """Applies one keyboard slip at position ``i`` of ``chars``, in place; returns None."""
        kind = int(self.rng.random() * 4)
        if kind == 0 and i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif kind == 1:
            del chars[i]
        elif kind == 2:
            chars.insert(i, chars[i])
        else:
            near = pick(self.rng, KEYBOARD_NEIGHBOURS.get(chars[i].lower(), "aeiou"))
            chars[i] = near.upper() if chars[i].isupper() else near

    def case(self, text: str) -> str:
        """Returns ``text`` in UPPER, lower or Title case."""
        roll = self.rng.random()
        if roll < 0.5:
            return text.upper()
        return text.lower() if roll < 0.85 else text.title()

    def spaces(self, text: str) -> str:
        """Returns ``text`` with a leading, trailing or doubled space."""
        roll = self.rng.random()
        if roll < 0.35:
            return " " + text
        if roll < 0.7 or " " not in text:
            return text + " "
        return text.replace(" ", "  ", 1)

    def messy(self, text: str, profile: Profile, typo: float | None = None) -> str:
        """Returns ``text`` after the profile's typo, case and whitespace noise."""
        if not text:
            return text
        if self.rng.random() < (profile.typo if typo is None else typo):
            text = self.typo(text)
        if self.rng.random() < profile.case:
            text = self.case(text)
        if self.rng.random() < profile.spaces:
            text = self.spaces(text)
        return text


@dataclass(frozen=True, slots=True)
class Profile:
    """How dirty one source is: probabilities per row or per value."""

    typo: float
    case: float
    spaces: float
    fold: float
    nickname: float
    swap: float
    old_address: float
    old_email: float


PROFILES = {
    "crm": Profile(
        typo=0.03, case=0.04, spaces=0.04, fold=0.05, nickname=0.12, swap=0.02, old_address=0.3, old_email=0.2
    ),
    "erp": Profile(
        typo=0.02, case=0.0, spaces=0.03, fold=0.5, nickname=0.05, swap=0.02, old_address=0.6, old_email=0.5
    ),
    "shop": Profile(
        typo=0.03, case=0.08, spaces=0.05, fold=0.1, nickname=0.1, swap=0.02, old_address=0.2, old_email=0.1
    ),
    "pos": Profile(
        typo=0.05, case=0.1, spaces=0.04, fold=0.3, nickname=0.15, swap=0.02, old_address=0.5, old_email=0.4
    ),
    "survey": Profile(
        typo=0.04, case=0.12, spaces=0.05, fold=0.15, nickname=0.15, swap=0.02, old_address=0.0, old_email=0.3
    ),
}


# --------------------------------------------------------------------------------------------
# Pools: Faker is slow per call, so each locale's names and places are drawn once, then sampled.


@dataclass(slots=True)
class LocalePool:
    """Pre-drawn names, streets, places and postcodes of one country."""

    spec: CountrySpec
    faker: Faker
    female: list[str]
    male: list[str]
    last: list[str]
    streets: list[str]
    places: list[tuple[str, str, str, str]]  # city, region, region code, postcode prefix
    postcodes: list[str]
    jobs: list[str]


def build_pools(seed: int, persons: int) -> dict[str, LocalePool]:
    """Returns a :class:`LocalePool` per country, sized to the expected number of people there."""
    return {iso2: _locale_pool(spec, seed, max(60, int(persons * spec.weight))) for iso2, spec in COUNTRIES.items()}


def _locale_pool(spec: CountrySpec, seed: int, people: int) -> LocalePool:
    """Returns the pools of one country, drawn from its own seeded Faker."""
    fake = Faker(spec.locale)
    fake.seed_instance(f"{seed}:{spec.locale}")
    female, male = FORMAL_NAMES.get(spec.locale[:2], ((), ()))
    size = min(600, 40 + people // 4)
    return LocalePool(
        spec=spec,
        faker=fake,
        female=[fake.first_name_female() for _ in range(size)] + list(female) * 3,
        male=[fake.first_name_male() for _ in range(size)] + list(male) * 3,
        last=[fake.last_name() for _ in range(min(2000, 60 + people // 3))],
        streets=[fake.street_name() for _ in range(min(3000, 30 + people // 5))],
        places=_places(spec, fake),
        postcodes=_faker_postcodes(spec, fake, min(3000, 50 + people // 2)),
        jobs=[fake.job() for _ in range(min(150, 20 + people // 20))],
    )


def _places(spec: CountrySpec, fake: Faker) -> list[tuple[str, str, str, str]]:
    """Returns (city, region, region code, postcode area) choices for the country."""
    if spec.iso2 == "GB":
        return [(city, county, county, area) for city, county, area in GB_PLACES]
    if spec.iso2 == "US":
        return list(US_PLACES)
    if spec.iso2 == "IT":
        return _italian_places(fake)
    places = []
    for _ in range(150):
        region = fake.administrative_unit()
        places.append((fake.city(), region, region, ""))
    return places


def _italian_places(fake: Faker) -> list[tuple[str, str, str, str]]:
    """Returns (town, province, province code, CAP) triples that belong together.

    Faker's own it_IT ``city()`` draws from a set, so its output changes with PYTHONHASHSEED;
    the CAP table it is built from is an ordered dict, so draw from that instead.
    """
    provider = next(p for p in fake.get_providers() if type(p).__module__.endswith("address.it_IT"))
    provinces = dict(zip(provider.states_abbr, provider.states, strict=True))
    places = []
    for _ in range(200):
        cap = fake.postcode()
        town, code = fake.random_element(provider.cap_city_province[cap])
        places.append((town, provinces.get(code, code), code, cap))
    return places


def _faker_postcodes(spec: CountrySpec, fake: Faker, size: int) -> list[str]:
    """Returns valid, canonically spaced postcodes for countries without a places table."""
    if spec.iso2 in ("GB", "US", "IT"):
        return []
    codes = (_canonical_postcode(spec.iso2, fake.postcode()) for _ in range(size))
    return [code for code in codes if code]


def _canonical_postcode(country: str, code: str) -> str:
    """Returns the postcode spaced the country's way, or "" when Faker made an invalid one."""
    compact = code.replace(" ", "")
    if country == "NL":
        # Dutch postcodes never end in SA, SD or SS.
        return "" if compact[4:] in ("SA", "SD", "SS") else f"{compact[:4]} {compact[4:]}"
    if country == "SE":
        return f"{compact[:3]} {compact[3:]}"
    if country == "IE":
        return f"{compact[:3]} {compact[3:]}"
    return code


# --------------------------------------------------------------------------------------------
# Phones


@dataclass(frozen=True, slots=True)
class PhoneStem:
    """Leading digits of valid numbers, and layouts with one slot per trailing digit."""

    country_code: int
    leading_zero: bool
    prefix: str
    tail: int
    layouts: tuple[str, str, str]  # E.164, international, national


_ACCEPTED_TYPES = {
    "mobile": (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE),
    "fixed": (PhoneNumberType.FIXED_LINE, PhoneNumberType.FIXED_LINE_OR_MOBILE),
}
_LAYOUT_FORMATS = (PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL)


class PhoneFactory:
    """Unique, valid phone numbers per country and kind, built from the libphonenumber examples.

    Validating every number costs a third of the run time at a million rows, so validity is
    proven per stem instead: a stem (leading digits) is kept only if numbers with the lowest,
    highest and six random trailing digits are all valid for the region and of the right kind.
    """

    def __init__(self, rng: random.Random, persons: int) -> None:
        self.rng = rng
        self.persons = persons
        self.stems: dict[tuple[str, str], list[PhoneStem]] = {}
        self.used: set[str] = set()

    def new(self, region: str, kind: str) -> Phone:
        """Returns a never-before-issued number of ``kind`` ("mobile" or "fixed") valid in ``region``."""
        stems = self.stems.get((region, kind)) or self._discover(region, kind)
        while True:
            stem = pick(self.rng, stems)
            suffix = str(between(self.rng, 0, 10**stem.tail - 1)).zfill(stem.tail)
            e164 = stem.layouts[0].format(*suffix)
            # No per-number check: _checked_stem proved the stem valid for any trailing digits.
            if e164 not in self.used:
                self.used.add(e164)
                return Phone(region, e164, stem.layouts[1].format(*suffix), stem.layouts[2].format(*suffix))

    @staticmethod
    def _number(stem: PhoneStem, suffix: str) -> phonenumbers.PhoneNumber:
        """Returns the phonenumbers object for ``stem`` followed by ``suffix``."""
        return phonenumbers.PhoneNumber(
            country_code=stem.country_code,
            national_number=int(stem.prefix + suffix),
            italian_leading_zero=stem.leading_zero or None,
        )

    def _discover(self, region: str, kind: str) -> list[PhoneStem]:
        """Returns stems: the example's leading digits, randomised, kept only when proven valid.

        Enough stems that numbers stay sparse (fast unique draws) and varied, at most 40.
        """
        wanted = min(40, 3 + int(self.persons * COUNTRIES[region].weight) // 1500)
        example_type = PhoneNumberType.MOBILE if kind == "mobile" else PhoneNumberType.FIXED_LINE
        example = phonenumbers.example_number_for_type(region, example_type)
        digits = str(example.national_number)
        tail = 5 if len(digits) >= 9 else 4
        base = digits[:-tail]
        stems: list[PhoneStem] = []
        for attempt in range(600):
            prefix = base if attempt == 0 else base[0] + "".join(pick(self.rng, string.digits) for _ in base[1:])
            stem = self._checked_stem(example, region, prefix, tail, kind)
            if stem and stem.prefix not in {s.prefix for s in stems}:
                stems.append(stem)
            if len(stems) == wanted:
                break
        if not stems:
            raise RuntimeError(f"found no valid {kind} phone numbers for {region}")
        self.stems[(region, kind)] = stems
        return stems

    def _checked_stem(
        self, example: phonenumbers.PhoneNumber, region: str, prefix: str, tail: int, kind: str
    ) -> PhoneStem | None:
        """Returns the stem if numbers under it are valid, of the right kind, and laid out alike."""
        probe = PhoneStem(example.country_code, bool(example.italian_leading_zero), prefix, tail, ("", "", ""))
        randoms = [str(between(self.rng, 0, 10**tail - 1)).zfill(tail) for _ in range(6)]
        numbers = [self._number(probe, suffix) for suffix in ("0" * tail, "9" * tail, *randoms)]
        for number in numbers:
            # For region: +1 204 is a valid number, but Canadian, not a US one.
            if not phonenumbers.is_valid_number_for_region(number, region):
                return None
            if phonenumbers.number_type(number) not in _ACCEPTED_TYPES[kind]:
                return None
        layouts = {tuple(_layout(phonenumbers.format_number(n, fmt), tail) for fmt in _LAYOUT_FORMATS) for n in numbers}
        if len(layouts) != 1:
            return None
        e164, international, national = layouts.pop()
        return PhoneStem(probe.country_code, probe.leading_zero, prefix, tail, (e164, international, national))


def _layout(formatted: str, tail: int) -> str:
    """Returns ``formatted`` as a str.format template with its last ``tail`` digits as slots."""
    slots = {i for i, ch in enumerate(formatted) if ch.isdigit()}
    last = sorted(slots)[-tail:]
    return "".join("{}" if i in last else ch.replace("{", "{{").replace("}", "}}") for i, ch in enumerate(formatted))


# --------------------------------------------------------------------------------------------
# The world: organisations and people


def random_date(rng: random.Random, start: date, end: date) -> date:
    """Returns a uniformly random day from ``start`` to ``end`` inclusive."""
    return date.fromordinal(between(rng, start.toordinal(), end.toordinal()))


OLDEST_DOB = date(REFERENCE_DATE.year - 91, REFERENCE_DATE.month, REFERENCE_DATE.day) + timedelta(days=1)
YOUNGEST_DOB = date(REFERENCE_DATE.year - 18, REFERENCE_DATE.month, REFERENCE_DATE.day)


def clamp_dob(dob: date) -> date:
    """Returns ``dob`` moved into the 18-90 years age band."""
    return min(max(dob, OLDEST_DOB), YOUNGEST_DOB)


PERSONAL_EMAIL_PATTERNS = (
    "{f}.{l}", "{f}.{l}", "{f}{l}", "{f}_{l}", "{i}{l}", "{i}{l}{nn}", "{f}.{l}{yy}", "{l}.{f}", "{f}{j}{nn}",
    "{f}{year}",
)
WORK_EMAIL_PATTERNS = ("{f}.{l}", "{f}.{l}", "{i}{l}", "{i}.{l}", "{f}")


class World:
    """Builds the true organisations and people, and plans which source rows each person gets."""

    # Most people are in one or two systems; a few in all five.
    SOURCE_COUNTS = Weighted((1, 2, 3, 4, 5), (0.5, 0.24, 0.13, 0.08, 0.05))
    CONSUMER_WEIGHTS = {"crm": 0.075, "erp": 0.185, "shop": 0.38, "pos": 0.27, "survey": 0.09}
    B2B_WEIGHTS = {"crm": 0.7, "erp": 0.1, "shop": 0.1, "pos": 0.04, "survey": 0.06}

    def __init__(self, records: int, seed: int) -> None:
        self.records = records
        self.rng = random.Random(f"{seed}:world")
        self.pools = build_pools(seed, int(records / 2.2))
        self.phones = PhoneFactory(random.Random(f"{seed}:phones"), int(records / 2.2))
        self.emails: set[str] = set()
        self.domains: set[str] = set()
        self.organisations: list[Organisation] = []
        self.persons: list[Person] = []
        # Counted at creation, not from ``persons``: a household's members are all made
        # before any of them is appended, and each is a different person.
        self._persons_made = 0
        self._employers: dict[str, Weighted[Organisation]] = {}

    def build(self) -> World:
        """Creates organisations, then people until their planned rows reach ``records``; returns self."""
        records = self.records
        for _ in range(max(3, round(records * 0.03))):
            self._add_organisation()
        self._index_employers()
        planned = sum(org.has_erp_account for org in self.organisations)
        while planned < records:
            for person in self._unit():
                self.persons.append(person)
                planned += len(person.plan)
        self._assign_erp_contacts()
        return self

    # -- organisations

    def _add_organisation(self) -> None:
        """Creates one organisation with address, switchboard number and VAT id; returns None."""
        country = self._country()
        pool = self.pools[country]
        name = pool.faker.company()
        org = Organisation(
            org_id=f"O{len(self.organisations) + 1:05d}",
            country=country,
            name=name,
            domain=self._domain(name, pool.spec),
            vat_id=vat_id(country, self.rng),
            address=self._address(pool, business=True),
            phone=self.phones.new(country, "fixed"),
            has_erp_account=self.rng.random() < 0.8,
        )
        self.organisations.append(org)

    def _domain(self, company: str, spec: CountrySpec) -> str:
        """Returns an unused web domain made from the company name (acme.co.uk, acme2.co.uk)."""
        words = [slug(word) for word in strip_company_suffix(company).replace("-", " ").split()]
        base = "".join(w for w in words[:2] if w and w not in ("and", "e", "et", "y", "und", "i", "en")) or "firma"
        domain, n = f"{base}.{spec.tld}", 1
        while domain in self.domains:
            n += 1
            domain = f"{base}{n}.{spec.tld}"
        self.domains.add(domain)
        return domain

    def _index_employers(self) -> None:
        """Weights organisations by a heavy-tailed size, per country, for picking employers fast."""
        sizes = [self.rng.paretovariate(1.3) for _ in self.organisations]
        by_country: dict[str, tuple[list[Organisation], list[float]]] = {}
        for org, size in zip(self.organisations, sizes, strict=True):
            orgs, weights = by_country.setdefault(org.country, ([], []))
            orgs.append(org)
            weights.append(size)
        self._employers = {country: Weighted(orgs, weights) for country, (orgs, weights) in by_country.items()}
        self._employers["*"] = Weighted(self.organisations, sizes)

    def _employer(self, country: str) -> Organisation:
        """Returns an employer, mostly from the person's own country."""
        key = country if country in self._employers and self.rng.random() < 0.85 else "*"
        return self._employers[key].draw(self.rng)

    def _assign_erp_contacts(self) -> None:
        """Gives three in four ERP business accounts a known contact person among its staff."""
        for person in self.persons:
            org = person.organisation
            if org and org.has_erp_account and org.contact is None and self.rng.random() < 0.75:
                org.contact = person

    # -- people

    def _country(self) -> str:
        """Returns an ISO country code, drawn with the population weights."""
        return COUNTRY_WEIGHTS.draw(self.rng)

    def _unit(self) -> list[Person]:
        """Returns the next people to add: one person, a household, twins or a namesake."""
        roll = self.rng.random()
        if roll < 0.04:
            return self._household()
        if roll < 0.043:
            return self._twins()
        if roll < 0.073 and self.persons:
            return [self._namesake()]
        pool = self.pools[self._country()]
        return [self._person(pool, self._home(pool, pick(self.rng, pool.last), landline=0.3))]

    def _home(self, pool: LocalePool, last_name: str, landline: float) -> Home:
        """Returns a new home: address, maybe a former address, maybe a landline."""
        address = self._address(pool)
        old = self._address(pool) if self.rng.random() < 0.12 else None
        phone = self.phones.new(pool.spec.iso2, "fixed") if self.rng.random() < landline else None
        return Home(last_name, address, old, phone)

    def _household(self) -> list[Person]:
        """Returns 2-4 people sharing last name, address and landline: partners and adult children."""
        pool = self.pools[self._country()]
        home = self._home(pool, pick(self.rng, pool.last), landline=0.7)
        head = self._person(pool, home)
        members = [head]
        for _ in range(HOUSEHOLD_EXTRA_MEMBERS.draw(self.rng)):
            # A partner of about the same age, or a grown-up child 20-35 years younger.
            partner = self.rng.random() < 0.5
            offset = between(self.rng, -2500, 2500) if partner else between(self.rng, 7300, 12800)
            taken = {m.first_name for m in members}
            members.append(self._person(pool, home, dob=clamp_dob(head.dob + timedelta(days=offset)), avoid=taken))
        return members

    def _twins(self) -> list[Person]:
        """Returns two people sharing last name, home and date of birth, with different first names."""
        pool = self.pools[self._country()]
        home = self._home(pool, pick(self.rng, pool.last), landline=0.6)
        first = self._person(pool, home)
        return [first, self._person(pool, home, dob=first.dob, avoid={first.first_name})]

    def _namesake(self) -> Person:
        """Returns a new person with the same first and last name as an existing one, nothing else."""
        original = pick(self.rng, self.persons)
        pool = self.pools[original.country]
        home = self._home(pool, original.last_name, landline=0.3)
        return self._person(pool, home, first_name=original.first_name, gender=original.gender)

    def _person(
        self,
        pool: LocalePool,
        home: Home,
        *,
        dob: date | None = None,
        first_name: str | None = None,
        gender: str | None = None,
        avoid: set[str] | frozenset[str] = frozenset(),
    ) -> Person:
        """Returns a new person living in ``home``; given values (twins, namesakes) are kept."""
        rng = self.rng
        gender = gender or GENDERS.draw(rng)
        first_name = first_name or self._first_name(pool, gender, avoid)
        dob = dob or clamp_dob(REFERENCE_DATE - timedelta(days=int(rng.triangular(6570, 33200, 14600))))
        middle = self._first_name(pool, gender, {first_name}) if rng.random() < self._middle_rate(pool) else ""
        self._persons_made += 1
        person = Person(
            person_id=f"P{self._persons_made:06d}",
            country=pool.spec.iso2,
            first_name=first_name,
            middle_name=middle,
            last_name=home.last_name,
            gender=gender,
            dob=dob,
            email=self._personal_email(first_name, home.last_name, dob, pool.spec),
            old_email="",
            mobile=self.phones.new(pool.spec.iso2, "mobile"),
            home=home,
        )
        if rng.random() < 0.1:
            person.old_email = self._personal_email(first_name, home.last_name, dob, pool.spec)
        if rng.random() < 0.3:
            self._employ(person, pool)
        person.plan = self._plan(person)
        return person

    @staticmethod
    def _middle_rate(pool: LocalePool) -> float:
        """Returns how often people of the country have a middle name on record."""
        return 0.3 if pool.spec.locale.startswith("en") else 0.1

    def _first_name(self, pool: LocalePool, gender: str, avoid: set[str] | frozenset[str]) -> str:
        """Returns a first name fitting ``gender`` that is not in ``avoid``."""
        if gender == "other":
            names = pick(self.rng, (pool.female, pool.male))
        else:
            names = pool.female if gender == "female" else pool.male
        name = pick(self.rng, names)
        while name in avoid:
            name = pick(self.rng, names)
        return name

    def _employ(self, person: Person, pool: LocalePool) -> None:
        """Gives ``person`` an employer, a job title and a work e-mail; returns None."""
        org = self._employer(person.country)
        person.organisation = org
        person.job_title = pick(self.rng, BUSINESS_TITLES) if self.rng.random() < 0.5 else pick(self.rng, pool.jobs)
        person.work_email = self._work_email(person.first_name, person.last_name, org.domain)

    def _plan(self, person: Person) -> list[str]:
        """Returns the sources this person has rows in, one entry per row."""
        weights = self.B2B_WEIGHTS if person.organisation else self.CONSUMER_WEIGHTS
        count = self.SOURCE_COUNTS.draw(self.rng)
        # Weighted sampling without replacement (Efraimidis-Spirakis keys).
        keys = {source: self.rng.random() ** (1 / weight) for source, weight in weights.items()}
        plan: list[str] = []
        for source in sorted(keys, key=keys.__getitem__, reverse=True)[:count]:
            plan.append(source)
            # The same person registered twice (lost card, guest checkout, re-keyed lead).
            if source != "survey" and self.rng.random() < 0.03:
                plan.append(source)
        while "survey" in plan and plan.count("survey") < 6 and self.rng.random() < 0.2:
            plan.append("survey")
        return plan

    # -- contact details

    def _personal_email(self, first: str, last: str, dob: date, spec: CountrySpec) -> str:
        """Returns an unused personal e-mail address at one of the country's common providers."""
        f, la = slug(first) or "x", slug(last) or "x"
        yy, nn = f"{dob.year % 100:02d}", str(between(self.rng, 1, 99))
        local = pick(self.rng, PERSONAL_EMAIL_PATTERNS).format(f=f, l=la, i=f[0], j=la[0], nn=nn, yy=yy, year=dob.year)
        domain = pick(self.rng, spec.providers)
        email = f"{local}@{domain}"
        while email in self.emails:
            email = f"{local}{between(self.rng, 1, 999)}@{domain}"
        self.emails.add(email)
        return email

    def _work_email(self, first: str, last: str, domain: str) -> str:
        """Returns an unused e-mail address at the employer's domain."""
        f, la = slug(first) or "x", slug(last) or "x"
        local = pick(self.rng, WORK_EMAIL_PATTERNS).format(f=f, l=la, i=f[0])
        email = f"{local}@{domain}"
        while email in self.emails:
            email = f"{f}.{la}{between(self.rng, 2, 9)}@{domain}"
        self.emails.add(email)
        return email

    def _address(self, pool: LocalePool, business: bool = False) -> Address:
        """Returns a new home (or, with ``business``, office) address in the pool's country."""
        rng = self.rng
        spec = pool.spec
        city, region, region_code, area = pick(rng, pool.places)
        line2 = ""
        if rng.random() < (0.3 if business else 0.15):
            template = pick(rng, ("Unit {n}", "Floor {n}", "Suite {n}")) if business else pick(rng, spec.line2_formats)
            line2 = template.format(n=between(rng, 1, 40), l=pick(rng, "ABCDEF"))
        return Address(
            line1=street_line(spec, pick(rng, pool.streets), rng),
            line2=line2,
            city=city,
            region=region,
            region_code=region_code,
            postcode=self._postcode(pool, area),
            country=spec.iso2,
        )

    def _postcode(self, pool: LocalePool, area: str) -> str:
        """Returns a postcode in the country's format, inside ``area`` where the place has one."""
        rng = self.rng
        if pool.spec.iso2 == "GB":
            inward = f"{between(rng, 0, 9)}{pick(rng, GB_POSTCODE_LETTERS)}{pick(rng, GB_POSTCODE_LETTERS)}"
            return f"{area}{between(rng, 1, 20)} {inward}"
        if pool.spec.iso2 == "US":
            return f"{area}{between(rng, 1, 99):02d}"
        if pool.spec.iso2 == "IT":
            return area
        return pick(rng, pool.postcodes)


def street_line(spec: CountrySpec, street: str, rng: random.Random) -> str:
    """Returns street and house number laid out the country's way."""
    number = between(rng, 100, 9999) if spec.iso2 == "US" else between(rng, 1, 180)
    if spec.iso2 == "PL":
        street = f"ul. {street}"
    if spec.house_number == "first":
        return f"{number} {street}"
    if spec.house_number == "comma":
        return f"{street}, {number}"
    return f"{street} {number}"


def strip_company_suffix(name: str) -> str:
    """Returns the company name without its legal form (Ltd, GmbH, S.A., ...)."""
    for suffix in sorted(COMPANY_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)].rstrip(" ,")
    return name


# --------------------------------------------------------------------------------------------
# VAT numbers: valid by python-stdnum's rules, so a tax-id validator can be switched on.


def vat_id(country: str, rng: random.Random) -> str:
    """Returns a checksum-valid VAT number (US: an EIN) for an organisation in ``country``."""
    if country == "GB":
        return _gb_vat(rng)
    if country == "FR":
        return _fr_vat(rng)
    if country == "IE":
        body = f"{between(rng, 1000000, 9999999)}"
        return f"IE{body}{ie_vat.calc_check_digit(body)}"
    if country == "US":
        return f"{pick(rng, EIN_PREFIXES)}-{between(rng, 0, 9999999):07d}"
    validator = _vat_validators()[country]
    while True:
        candidate = _vat_candidate(country, rng)
        if validator(candidate):
            return candidate


# IRS campus prefixes that python-stdnum accepts for an EIN.
EIN_PREFIXES = (
    "10", "12", "20", "26", "27", "30", "32", "35", "36", "38", "45", "46", "47", "51", "52",
    "54", "56", "61", "65", "72", "74", "77", "82", "84", "86", "88", "91", "92", "95", "98",
)


@lru_cache(maxsize=1)
def _vat_validators() -> dict[str, Callable[[str], bool]]:
    """Returns each EU country's own stdnum check (much faster than the stdnum.eu.vat dispatcher)."""
    from stdnum.de import vat as de_vat
    from stdnum.es import nif
    from stdnum.it import iva
    from stdnum.nl import btw
    from stdnum.pl import nip
    from stdnum.se import vat as se_vat

    return {"DE": de_vat.is_valid, "ES": nif.is_valid, "IT": iva.is_valid, "NL": btw.is_valid,
            "PL": nip.is_valid, "SE": se_vat.is_valid}


def _vat_candidate(country: str, rng: random.Random) -> str:
    """Returns a VAT number of the right shape for ``country``; its check digits may be wrong."""
    digits = "".join(pick(rng, string.digits) for _ in range(11))
    if country == "DE":
        return f"DE{between(rng, 1, 9)}{digits[:8]}"
    if country == "ES":
        return f"ES{pick(rng, 'ABCDEFGHJ')}{digits[:7]}{pick(rng, string.digits)}"
    if country == "NL":
        return f"NL{digits[:9]}B01"
    if country == "IT":
        # Digits 8-10 are the issuing tax office, which only takes a few values.
        return f"IT{digits[:7]}{between(rng, 1, 100):03d}{digits[7]}"
    if country == "PL":
        return f"PL{digits[:10]}"
    orgnr = f"{between(rng, 5, 9)}{digits[:8]}"
    return f"SE{orgnr}{luhn.calc_check_digit(orgnr)}01"


def _gb_vat(rng: random.Random) -> str:
    """Returns a GB VAT number whose mod-97 check digits are right."""
    while True:
        body = [between(rng, 0, 9) for _ in range(7)]
        check = -sum(w * d for w, d in zip(range(8, 1, -1), body, strict=True)) % 97
        candidate = "".join(map(str, body)) + f"{check:02d}"
        if gb_vat.is_valid(candidate):
            return "GB" + candidate


def _fr_vat(rng: random.Random) -> str:
    """Returns a FR VAT number: check key and a Luhn-valid SIREN."""
    body = f"{between(rng, 10000000, 99999999)}"
    siren = body + luhn.calc_check_digit(body)
    return f"FR{(12 + 3 * (int(siren) % 97)) % 97:02d}{siren}"


# --------------------------------------------------------------------------------------------
# Rendering true values the way each source holds them


def render_names(person: Person, dirt: Dirt, profile: Profile, middle: float = 0.0) -> tuple[str, str]:
    """Returns (first, last) with nicknames, middle names, folding, typos, case noise and swaps."""
    first = person.first_name
    if first in NICKNAMES and dirt.chance(profile.nickname):
        first = pick(dirt.rng, NICKNAMES[first])
    elif person.middle_name and dirt.chance(middle):
        first = f"{first} {person.middle_name if dirt.chance(0.5) else person.middle_name[0] + '.'}"
    last = person.last_name
    if dirt.chance(profile.fold):
        first, last = fold_accents(first), fold_accents(last)
    first, last = dirt.messy(first, profile), dirt.messy(last, profile)
    if dirt.chance(profile.swap):
        first, last = last, first
    return first, last


def pick_address(person: Person, dirt: Dirt, profile: Profile) -> Address:
    """Returns the current address, or the one before the person moved if this source is stale."""
    home = person.home
    if home.old_address and dirt.chance(profile.old_address):
        return home.old_address
    return home.address


def pick_email(person: Person, dirt: Dirt, profile: Profile, work: float = 0.0) -> str:
    """Returns the work, old or current personal e-mail, sometimes with upper case letters."""
    if person.work_email and dirt.chance(work):
        email = person.work_email
    elif person.old_email and dirt.chance(profile.old_email):
        email = person.old_email
    else:
        email = person.email
    if dirt.chance(0.05):
        local, _, domain = email.partition("@")
        email = f"{local.title()}@{domain.capitalize()}" if dirt.chance(0.7) else email.upper()
    return dirt.spaces(email) if dirt.chance(0.01) else email


def messy_street(line: str, dirt: Dirt, profile: Profile, abbreviate: float) -> str:
    """Returns a street line with abbreviations (Street -> St), typos and case/space noise."""
    if dirt.chance(abbreviate):
        for long, short in STREET_ABBREVIATIONS:
            if long in line:
                line = line.replace(long, short, 1)
                break
    return dirt.messy(line, profile)


def messy_postcode(code: str, dirt: Dirt, drop_zero: float = 0.0) -> str:
    """Returns a postcode lower-cased, unspaced or with a lost leading zero, as people type them."""
    roll = dirt.rng.random()
    if roll < 0.06 and " " in code:
        code = code.replace(" ", "")
    elif roll < 0.1:
        code = code.lower()
    elif roll < 0.1 + drop_zero and code.isdigit() and code.startswith("0"):
        code = code.lstrip("0")  # a spreadsheet read the postcode as a number
    return dirt.spaces(code) if dirt.chance(0.02) else code


def intl_phone(phone: Phone, dirt: Dirt) -> str:
    """Returns an international number with spaces, sometimes with the "(0)" trunk hint."""
    if COUNTRIES[phone.region].trunk_zero and dirt.chance(0.3):
        code, _, rest = phone.international.partition(" ")
        return f"{code} (0){rest}"
    return phone.international


def shop_phone(phone: Phone, dirt: Dirt) -> str:
    """Returns an E.164 number or one of the layouts people type into web forms."""
    roll = dirt.rng.random()
    if roll < 0.55:
        return phone.e164
    if roll < 0.7:
        return phone.international
    if roll < 0.82:
        return phone.national
    if roll < 0.9:
        return "".join(ch for ch in phone.national if ch.isdigit())
    if roll < 0.96:
        return phone.international.replace(" ", "-")
    return intl_phone(phone, dirt)


def pos_phone(phone: Phone, dirt: Dirt) -> str:
    """Returns digits only: the national number, or the country code without "+"."""
    if dirt.chance(0.35):
        return phone.e164[1:]
    return "".join(ch for ch in phone.national if ch.isdigit())


def region_value(address: Address, dirt: Dirt, blank: float) -> str:
    """Returns the state code or name (US) or the region name, sometimes left empty."""
    if address.country == "US":
        return address.region_code if dirt.chance(0.7) else address.region
    return dirt.blank(address.region, blank)


def country_name(country: str, dirt: Dirt) -> str:
    """Returns the English country name, or another common spelling (UK, USA, Deutschland)."""
    names = COUNTRIES[country].names
    return names[0] if dirt.chance(0.6) else pick(dirt.rng, names)


def since(dirt: Dirt, person: Person | None, start: date) -> date:
    """Returns a day a source first recorded someone: after ``start`` and after they turned 16."""
    if person is not None:
        sixteen = date(person.dob.year + 16, 1, 1)
        start = max(start, sixteen)
    return random_date(dirt.rng, min(start, REFERENCE_DATE), REFERENCE_DATE)


# --------------------------------------------------------------------------------------------
# Source rows


def crm_row(person: Person, dirt: Dirt) -> Row:
    """Returns a CRM lead/contact row; B2B contacts often carry the company's address and e-mail."""
    profile = PROFILES["crm"]
    org = person.organisation if person.organisation and dirt.chance(0.9) else None
    first, last = render_names(person, dirt, profile)
    address = org.address if org and dirt.chance(0.7) else pick_address(person, dirt, profile)
    landline = org.phone if org and dirt.chance(0.6) else person.home.landline
    values = {
        "Id": "",
        "Status": "Contact" if org and dirt.chance(0.65) else "Lead",
        "FirstName": first,
        "LastName": last,
        "Company": dirt.messy(company_variant(org.name, dirt), profile, typo=0.01) if org else "",
        "Title": dirt.blank(person.job_title, 0.2) if org else "",
        "Email": dirt.blank(pick_email(person, dirt, profile, work=0.8 if org else 0.0), 0.06),
        "Phone": dirt.blank(intl_phone(landline, dirt), 0.25) if landline else "",
        "MobilePhone": dirt.blank(intl_phone(person.mobile, dirt), 0.3),
        "MailingStreet": dirt.blank(messy_street(address.line1, dirt, profile, 0.1), 0.08),
        "MailingCity": dirt.blank(dirt.messy(address.city, profile, typo=0.01), 0.08),
        "MailingState": region_value(address, dirt, 0.4),
        "MailingPostalCode": dirt.blank(messy_postcode(address.postcode, dirt), 0.1),
        "MailingCountry": dirt.blank(country_name(address.country, dirt), 0.05),
        "CreatedDate": since(dirt, person, date(2012, 1, 1)).isoformat(),
    }
    return Row(values, person.person_id, org.org_id if org else "")


def company_variant(name: str, dirt: Dirt) -> str:
    """Returns the company name, sometimes without its legal form or with "&" for "and"."""
    roll = dirt.rng.random()
    if roll < 0.2:
        return strip_company_suffix(name)
    if roll < 0.3:
        return name.replace(" and ", " & ")
    return name


def erp_person_row(person: Person, dirt: Dirt) -> Row:
    """Returns an ERP consumer (C) account; names are UPPER CASE and accent-free more often than not."""
    profile = PROFILES["erp"]
    first, last = render_names(person, dirt, profile, middle=0.1)
    address = pick_address(person, dirt, profile)
    phone = person.home.landline if person.home.landline and dirt.chance(0.7) else person.mobile
    values = _erp_values(
        account_type="C",
        names=(first, last),
        address=address,
        dirt=dirt,
        tel=dirt.blank(phone.national, 0.2),
        email=dirt.blank(pick_email(person, dirt, profile), 0.3),
        created=since(dirt, person, date(2005, 1, 1)),
    )
    values["BIRTH_DT"] = person.dob.strftime("%d.%m.%Y") if dirt.chance(0.45) else ""
    return Row(values, person.person_id, "")


def erp_business_row(org: Organisation, dirt: Dirt) -> Row:
    """Returns an ERP business (B) account; the contact person is often unknown (no names)."""
    profile = PROFILES["erp"]
    contact = org.contact
    names = render_names(contact, dirt, profile) if contact else ("", "")
    shared_mailbox = f"{pick(dirt.rng, ('info', 'accounts', 'invoices'))}@{org.domain}"
    email = contact.work_email if contact and dirt.chance(0.6) else shared_mailbox
    values = _erp_values(
        account_type="B",
        names=names,
        address=org.address,
        dirt=dirt,
        tel=dirt.blank(org.phone.national, 0.1),
        email=dirt.blank(email, 0.15),
        created=since(dirt, None, date(2005, 1, 1)),
    )
    values["COMPANY_NAME"] = erp_case(company_variant(org.name, dirt), dirt)
    values["VAT_ID"] = dirt.blank(messy_vat(org.vat_id, dirt), 0.1)
    return Row(values, contact.person_id if contact else "", org.org_id)


def erp_case(text: str, dirt: Dirt) -> str:
    """Returns ``text`` upper-cased, as older ERP screens store it, more often than not."""
    return text.upper() if dirt.chance(0.6) else text


def _erp_values(
    *, account_type: str, names: tuple[str, str], address: Address, dirt: Dirt, tel: str, email: str, created: date
) -> dict[str, Any]:
    """Returns the ERP columns both account types share, in ERP style (often UPPER CASE)."""
    profile = PROFILES["erp"]
    street = messy_street(address.line1, dirt, profile, 0.4)
    if address.line2 and dirt.chance(0.7):
        street = f"{street}, {address.line2}"  # the ERP has one street field
    upper = dirt.chance(0.6)
    first, last = (names[0].upper(), names[1].upper()) if upper else names
    return {
        "KUNNR": "",
        "ACCOUNT_TYPE": account_type,
        "COMPANY_NAME": "",
        "LAST_NAME": last,
        "FIRST_NAME": first,
        "BIRTH_DT": "",
        "STREET": dirt.blank(street.upper() if upper else street, 0.05),
        "POST_CODE": dirt.blank(messy_postcode(address.postcode, dirt), 0.05),
        "CITY": dirt.blank(address.city.upper() if upper else address.city, 0.05),
        "REGION": region_value(address, dirt, 0.4),
        "COUNTRY": address.country,
        "TEL": tel,
        "EMAIL": email,
        "VAT_ID": "",
        "CREATED_ON": created.strftime("%Y%m%d"),
    }


def messy_vat(vat: str, dirt: Dirt) -> str:
    """Returns a VAT number with spaces or dots, or without its country prefix."""
    roll = dirt.rng.random()
    if roll < 0.1 and vat[:2].isalpha():
        return vat[2:]
    if roll < 0.2:
        return " ".join(vat[i : i + 3] for i in range(0, len(vat), 3))
    return vat


def shop_row(person: Person, dirt: Dirt) -> Row:
    """Returns a web-shop customer object (billing address nested; country code upper or lower)."""
    profile = PROFILES["shop"]
    first, last = render_names(person, dirt, profile, middle=0.15)
    address = pick_address(person, dirt, profile)
    gender = {"female": "female", "male": "male", "other": "diverse"}[person.gender]
    values = {
        "customer_id": 0,
        "email": pick_email(person, dirt, profile) if dirt.chance(0.98) else None,
        "first_name": first or None,
        "last_name": last or None,
        "phone": shop_phone(person.mobile, dirt) if dirt.chance(0.8) else None,
        "date_of_birth": person.dob.isoformat() if dirt.chance(0.5) else None,
        "gender": (dirt.case(gender) if dirt.chance(0.3) else gender) if dirt.chance(0.65) else None,
        "billing_address": {
            "line1": messy_street(address.line1, dirt, profile, 0.05),
            "line2": address.line2 or (None if dirt.chance(0.7) else ""),
            "city": dirt.messy(address.city, profile, typo=0.01),
            "region": region_value(address, dirt, 0.3) or None,
            "postal_code": messy_postcode(address.postcode, dirt),
            "country": address.country.lower() if dirt.chance(0.35) else address.country,
        },
        "created_at": "",
        "accepts_marketing": dirt.chance(0.4),
    }
    created = since(dirt, person, date(2015, 1, 1))
    seconds = between(dirt.rng, 0, 86399)
    values["created_at"] = f"{created.isoformat()}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z"
    return Row(values, person.person_id, "")


TIERS = Weighted(("Gold", "Silver", "Bronze"), (0.1, 0.3, 0.6))


def pos_row(person: Person, dirt: Dirt) -> Row:
    """Returns a loyalty-card row; tills keep digits-only mobiles and the postcode, not the street."""
    profile = PROFILES["pos"]
    first, last = render_names(person, dirt, profile)
    address = pick_address(person, dirt, profile)
    tier = TIERS.draw(dirt.rng)
    if dirt.chance(0.15):
        tier = dirt.spaces(dirt.case(tier))
    values = {
        "CardNo": "",
        "Forename": first,
        "Surname": last,
        "DOB": person.dob.strftime("%d/%m/%Y") if dirt.chance(0.6) else "",
        "Email": dirt.blank(pick_email(person, dirt, profile), 0.25),
        "Mobile": dirt.blank(pos_phone(person.mobile, dirt), 0.15),
        "PostCode": dirt.blank(messy_postcode(address.postcode, dirt, drop_zero=0.05), 0.05),
        "Country": COUNTRIES[address.country].iso3,
        "Tier": tier,
        "StoreId": f"{address.country}{between(dirt.rng, 1, 180):03d}",
        "JoinDate": since(dirt, person, date(2010, 1, 1)).strftime("%d/%m/%Y"),
    }
    return Row(values, person.person_id, "")


def survey_row(person: Person, dirt: Dirt) -> Row:
    """Returns one NPS response; survey tools often know only the e-mail address."""
    profile = PROFILES["survey"]
    first, last = render_names(person, dirt, profile) if dirt.chance(0.8) else ("", "")
    score = NPS_SCORES.draw(dirt.rng)
    answered = random_date(dirt.rng, REFERENCE_DATE - timedelta(days=3 * 365), REFERENCE_DATE)
    values = {
        "ResponseId": "",
        "RespondentEmail": dirt.blank(pick_email(person, dirt, profile, work=0.3), 0.05),
        "FirstName": first,
        "LastName": last,
        "Country": dirt.blank(country_name(person.country, dirt), 0.1),
        "Score": str(score),
        "RespondedAt": f"{answered.day:02d} {MONTHS[answered.month - 1]} {answered.year}",
        "Comment": "" if dirt.chance(0.35) else nps_comment(person, score, dirt),
    }
    return Row(values, person.person_id, "")


def nps_comment(person: Person, score: int, dirt: Dirt) -> str:
    """Returns a short comment fitting the score; a few people leave contact details in it."""
    if dirt.chance(0.02):
        return f"Please call me back on {person.mobile.national}, {person.first_name}"
    band = "detractor" if score <= 6 else "passive" if score <= 8 else "promoter"
    return pick(dirt.rng, COMMENTS[band])


PERSON_ROWS: dict[str, Callable[[Person, Dirt], Row]] = {
    "crm": crm_row, "erp": erp_person_row, "shop": shop_row, "pos": pos_row, "survey": survey_row,
}


def build_tables(world: World, seed: int) -> dict[str, list[Row]]:
    """Returns every source's rows, in file order, with their ids assigned."""
    tables: dict[str, list[Row]] = {source: [] for source in SOURCE_FILES}
    dirts = {source: Dirt(random.Random(f"{seed}:{source}")) for source in SOURCE_FILES}
    for person in world.persons:
        for source in person.plan:
            tables[source].append(PERSON_ROWS[source](person, dirts[source]))
    for org in world.organisations:
        if org.has_erp_account:
            tables["erp"].append(erp_business_row(org, dirts["erp"]))
    ids = random.Random(f"{seed}:ids")
    assign_crm_ids(tables["crm"], ids)
    assign_erp_ids(tables["erp"], ids)
    assign_shop_ids(tables["shop"], ids)
    assign_pos_ids(tables["pos"], ids)
    assign_survey_ids(tables["survey"], ids)
    return tables


def _unique_codes(rng: random.Random, count: int, make: Callable[[], str]) -> list[str]:
    """Returns ``count`` distinct codes from ``make``, in the order first made."""
    codes: list[str] = []
    seen: set[str] = set()
    while len(codes) < count:
        code = make()
        if code not in seen:
            seen.add(code)
            codes.append(code)
    return codes


def assign_crm_ids(rows: list[Row], rng: random.Random) -> None:
    """Shuffles CRM rows and gives Salesforce-like ids: "003" and 12 base-36 characters."""
    rng.shuffle(rows)
    alphabet = string.digits + string.ascii_uppercase
    codes = _unique_codes(rng, len(rows), lambda: "003" + "".join(rng.choices(alphabet, k=12)))
    for row, code in zip(rows, codes, strict=True):
        row.values["Id"] = code


def assign_erp_ids(rows: list[Row], rng: random.Random) -> None:
    """Orders ERP accounts by creation and numbers them ascending, 10 digits, with gaps."""
    rows.sort(key=lambda row: row.values["CREATED_ON"])
    number = 100000
    for row in rows:
        number += pick(rng, (1, 1, 1, 2, 3))
        row.values["KUNNR"] = f"{number:010d}"


def assign_shop_ids(rows: list[Row], rng: random.Random) -> None:
    """Orders shop customers by sign-up and numbers them like an auto-increment with deletions."""
    rows.sort(key=lambda row: row.values["created_at"])
    number = 1000
    for row in rows:
        number += pick(rng, (1, 1, 1, 1, 2))
        row.values["customer_id"] = number


def assign_pos_ids(rows: list[Row], rng: random.Random) -> None:
    """Shuffles loyalty rows and gives 16-digit card numbers with a Luhn check digit."""
    rng.shuffle(rows)

    def card() -> str:
        """Returns a card number: issuer prefix, 11 digits and a Luhn check digit."""
        body = "6337" + "".join(rng.choices(string.digits, k=11))
        return body + luhn.calc_check_digit(body)

    for row, code in zip(rows, _unique_codes(rng, len(rows), card), strict=True):
        row.values["CardNo"] = code


def assign_survey_ids(rows: list[Row], rng: random.Random) -> None:
    """Orders responses by date and gives survey-tool ids ("R_" and 15 letters or digits)."""
    rows.sort(key=lambda row: _survey_day(row.values["RespondedAt"]))
    alphabet = string.ascii_letters + string.digits
    codes = _unique_codes(rng, len(rows), lambda: "R_" + "".join(rng.choices(alphabet, k=15)))
    for row, code in zip(rows, codes, strict=True):
        row.values["ResponseId"] = code


def _survey_day(text: str) -> tuple[int, int, int]:
    """Returns (year, month, day) of a "05 Mar 2026" date, for sorting."""
    day, month, year = text.split()
    return int(year), MONTHS.index(month) + 1, int(day)


# --------------------------------------------------------------------------------------------
# Rule breakers: a few rows (about 0.3%) that a validation gate must catch


EMAIL_FIELDS = {"crm": "Email", "erp": "EMAIL", "shop": "email", "pos": "Email", "survey": "RespondentEmail"}
DOB_FIELDS = {"erp": ("BIRTH_DT", "%d.%m.%Y"), "shop": ("date_of_birth", "%Y-%m-%d"), "pos": ("DOB", "%d/%m/%Y")}
NAME_FIELDS = {
    "crm": ("FirstName", "LastName"), "erp": ("FIRST_NAME", "LAST_NAME"), "shop": ("first_name", "last_name"),
    "pos": ("Forename", "Surname"), "survey": ("FirstName", "LastName"),
}
PHONE_FIELDS = {"crm": "MobilePhone", "erp": "TEL", "shop": "phone", "pos": "Mobile"}


class Breaker:
    """Plants rule-breaking values into distinct, randomly chosen rows."""

    def __init__(self, tables: dict[str, list[Row]], rng: random.Random, records: int) -> None:
        self.tables = tables
        self.rng = rng
        self.records = records
        self.touched: set[tuple[str, int]] = set()

    def count(self, rate: float) -> int:
        """Returns how many rows get a defect at ``rate`` (at least one)."""
        return max(1, round(self.records * rate))

    def take(self, sources: Sequence[str], accept: Callable[[Row], bool] = lambda row: True) -> tuple[str, Row] | None:
        """Returns an untouched row of one of ``sources`` that ``accept`` allows, or None."""
        for _ in range(1000):
            source = pick(self.rng, [s for s in sources if self.tables[s]])
            index = self.rng.randrange(len(self.tables[source]))
            row = self.tables[source][index]
            if (source, index) not in self.touched and accept(row):
                self.touched.add((source, index))
                return source, row
        return None

    def run(self) -> None:
        """Plants every kind of defect; returns None."""
        self.invalid_emails()
        self.future_dobs()
        self.bad_scores()
        self.nameless()
        self.non_phones()
        self.formula()
        self.empty_id()
        self.pos_duplicates()

    def invalid_emails(self) -> None:
        """E-mail addresses with broken syntax, in any source; returns None."""
        for n in range(self.count(0.0008)):
            picked = self.take(list(EMAIL_FIELDS), lambda row: "@" in str(row.values.get(_email_key(row)) or ""))
            if picked:
                source, row = picked
                row.values[EMAIL_FIELDS[source]] = broken_email(str(row.values[EMAIL_FIELDS[source]]), n)

    def future_dobs(self) -> None:
        """Dates of birth after the reference date (ERP, shop, POS); returns None."""
        for _ in range(self.count(0.0004)):
            picked = self.take(list(DOB_FIELDS), lambda row: bool(row.values.get(_dob_key(row))))
            if picked:
                source, row = picked
                key, fmt = DOB_FIELDS[source]
                future = random_date(self.rng, REFERENCE_DATE + timedelta(days=1), date(2099, 12, 31))
                row.values[key] = future.strftime(fmt)

    def bad_scores(self) -> None:
        """NPS scores 11, -1 and "ten"; returns None."""
        for n in range(max(3, self.count(0.0004))):
            picked = self.take(["survey"])
            if picked:
                picked[1].values["Score"] = ("11", "-1", "ten")[n % 3]

    def nameless(self) -> None:
        """Rows with neither first nor last name; returns None."""
        for _ in range(self.count(0.0004)):
            picked = self.take(["crm", "shop", "pos", "survey"])
            if picked:
                source, row = picked
                first, last = NAME_FIELDS[source]
                empty = None if source == "shop" else ""
                row.values[first], row.values[last] = empty, empty

    def non_phones(self) -> None:
        """Phone fields holding "n/a", "12" and the like; returns None."""
        for n in range(self.count(0.0003)):
            picked = self.take(list(PHONE_FIELDS))
            if picked:
                source, row = picked
                row.values[PHONE_FIELDS[source]] = ("n/a", "12", "N/A", "-")[n % 4]

    def formula(self) -> None:
        """The one spreadsheet formula, in a CRM last name; returns None."""
        picked = self.take(["crm"])
        if picked:
            picked[1].values["LastName"] = FORMULA_VALUE

    def empty_id(self) -> None:
        """The one CRM row without an Id; returns None."""
        picked = self.take(["crm"])
        if picked:
            picked[1].values["Id"] = ""

    def pos_duplicates(self) -> None:
        """Two different people on one CardNo, and one row exported twice; returns None."""
        rows = self.tables["pos"]
        first, second = self.take(["pos"]), self.take(["pos"])
        if first and second:
            second[1].values["CardNo"] = first[1].values["CardNo"]
        copied = self.take(["pos"])
        if copied:
            original = copied[1]
            index = next(i for i, row in enumerate(rows) if row is original)
            rows.insert(index + 1, Row(dict(original.values), original.person_id, original.organisation_id))


def _email_key(row: Row) -> str:
    """Returns the name of the row's e-mail field."""
    return next(key for key in EMAIL_FIELDS.values() if key in row.values)


def _dob_key(row: Row) -> str:
    """Returns the name of the row's date-of-birth field."""
    return next(key for key, _ in DOB_FIELDS.values() if key in row.values)


def broken_email(email: str, n: int) -> str:
    """Returns an e-mail address with broken syntax: a doubled "@", no "@", or no domain."""
    local, _, domain = email.strip().partition("@")
    kind = n % 4
    if kind == 0:
        return f"{local}@@{domain.split('.')[0]}"
    if kind == 1:
        return f"{local}.{domain}".replace("@", "")
    if kind == 2:
        return f"{local}@"
    return f"{local} @{domain}"


# --------------------------------------------------------------------------------------------
# Writing


def write_tables(tables: dict[str, list[Row]], out: Path) -> dict[str, int]:
    """Writes the five source files and the ground truth; returns rows written per file."""
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for source, filename in SOURCE_FILES.items():
        path = out / filename
        if source == "shop":
            write_jsonl(tables[source], path)
        else:
            write_csv(COLUMNS[source], [row.values for row in tables[source]], path, DELIMITERS[source])
        counts[filename] = len(tables[source])
    truth = [
        {"source_system": source, "source_record_id": str(row.values[ID_COLUMNS[source]]),
         "person_id": row.person_id, "organisation_id": row.organisation_id}
        for source in SOURCE_FILES
        for row in tables[source]
    ]
    (out / TRUTH_FILE).parent.mkdir(parents=True, exist_ok=True)
    write_csv(TRUTH_COLUMNS, truth, out / TRUTH_FILE, ",")
    counts[TRUTH_FILE.as_posix()] = len(truth)
    return counts


def write_csv(columns: Sequence[str], rows: list[dict[str, Any]], path: Path, delimiter: str) -> None:
    """Writes UTF-8 CSV with a header, minimal quoting and "\\n" line ends."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([row[column] for column in columns] for row in rows)


def write_jsonl(rows: list[Row], path: Path) -> None:
    """Writes one JSON object per line, keys in :data:`SHOP_KEYS` order, non-ASCII kept as is."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row.values, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------
# Entry points


def generate(records: int, seed: int, out: Path) -> dict[str, int]:
    """Generates about ``records`` source rows in total into ``out``; returns rows written per file.

    The keys are file paths relative to ``out`` (``truth/ground_truth.csv`` included).
    """
    if records < 50:
        raise ValueError("records must be at least 50")
    tables = build_tables(World(records, seed).build(), seed)
    Breaker(tables, random.Random(f"{seed}:defects"), records).run()
    return write_tables(tables, Path(out))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Returns the parsed command line."""
    parser = argparse.ArgumentParser(
        prog="python -m cmdm_pipeline.sample",
        description=(
            "Generate overlapping, deliberately dirty customer data for five source systems "
            "(crm_contacts.csv, erp_customers.csv, shop_customers.jsonl, pos_loyalty.csv, survey_nps.csv) "
            "and truth/ground_truth.csv mapping every source row to its true person. "
            "The same --records and --seed always give byte-identical files."
        ),
    )
    parser.add_argument("--records", type=int, default=10000, metavar="N",
                        help="approximate total number of source rows over all five files (default: 10000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--out", type=Path, default=Path("data/sample"), metavar="DIR",
                        help="output folder, created if missing; files in it are overwritten (default: data/sample)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the generator from the command line; returns the process exit code."""
    args = parse_args(argv)
    started = time.perf_counter()
    counts = generate(args.records, args.seed, args.out)
    for filename, rows in counts.items():
        print(f"{filename:<28} {rows:>9,} rows  {args.out / filename}")
    sources = sum(rows for name, rows in counts.items() if name != TRUTH_FILE.as_posix())
    print(f"{'total source rows':<28} {sources:>9,} rows  in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
