"""The synthetic entities: true organisations and people, their homes and contact details.

:class:`World` builds them from the seed and plans which source rows each person gets; the
source renderers (:mod:`cmdm_pipeline.sample.sources`) then write those rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from faker import Faker

from cmdm_pipeline.sample.common import COUNTRIES, COUNTRY_WEIGHTS, REFERENCE_DATE, CountrySpec, Weighted, between, pick
from cmdm_pipeline.sample.identifiers import Phone, PhoneFactory, vat_id
from cmdm_pipeline.sample.noise import slug

GENDERS = Weighted(("female", "male", "other"), (0.49, 0.495, 0.015))
HOUSEHOLD_EXTRA_MEMBERS = Weighted((1, 2, 3), (0.6, 0.25, 0.15))

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
COMPANY_SUFFIXES = (
    " Ltd", " Limited", " PLC", " plc", " LLC", " Inc", " Group", " and Sons", " GmbH", " AG", " KG", " S.A.",
    " S.L.", " SPA", " S.p.A.", " BV", " N.V.", " AB", " s.c.", " Sp.k.", " S.A.R.L.", " SARL", " SAS", " SA",
    " e.V.", " GmbH & Co. KG", " Inc.", " and Daughters", " Sp. z o.o.", " S.r.l.", " s.r.l.",
)


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
# The world: organisations and people


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
        numbers = (2, 9)
        while email in self.emails:
            if numbers == (2, 9) and all(f"{f}.{la}{n}@{domain}" in self.emails for n in range(2, 10)):
                # A large employer's common name, at millions of records: those eight were all issued, and
                # drawing among them again would never end. Files that never got here stay as they were.
                numbers = (10, 9999)
            email = f"{f}.{la}{between(self.rng, *numbers)}@{domain}"
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
