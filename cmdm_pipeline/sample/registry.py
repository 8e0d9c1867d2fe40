"""Seeded generator of a civil person registry: one file of people keyed in again and again, badly.

The bundled generator (:mod:`cmdm_pipeline.sample.generator`) writes customers of five business systems,
linked mostly by e-mail addresses and phone numbers. Matching tuned on that data alone would learn
to lean on contact details. This generator writes data of another shape, modelled on historical
and civil person registries (and the public "historical persons" record-linkage benchmarks): no
e-mail, no phone, only what a registry office keys in::

    RecordId,GivenName,FamilyName,BirthDate,BirthPlace,PostCode,Occupation,Gender

Every row is a separately keyed registry entry of a true person, with its own errors:

* people from twelve cultures (Faker locales), names drawn frequency-weighted, so common names
  repeat and namesakes occur; a few people copy another's full name, a few are siblings sharing
  family name, birth place and postcode;
* Russian, Ukrainian and Greek names are written in their own script or in one of several
  romanisation systems (Юрий: Yuriy, Iurii, Yury, Juri, Iouri, Jurij), German names with or
  without umlauts (Müller, Mueller, Muller), other names with or without accents;
* nicknames, initials, middle names and patronymics, swapped name fields, heavy typos
  (keyboard slips and phonetic respellings), random case;
* missing values in every column; birth dates with swapped day and month, days off, year
  typos, only the year known; birth places misspelled or wrong; older postcodes; changed jobs.

``--emails`` adds an ``Email`` column (a sign-up list of the same people), drawn from its own
random stream, so every other column stays byte for byte the same. ``truth/ground_truth.csv``
names the true person of each row, in the format of :mod:`cmdm_pipeline.sample.generator`::

    uv run python -m cmdm_pipeline.sample.registry --records 100000 --seed 1 --out data/registry

The same ``--records``, ``--seed`` and ``--emails`` always give byte-identical files: every random
choice comes from ``random.Random`` instances seeded from the seed, Faker instances are seeded
with ``seed_instance``, and dates are anchored to :data:`cmdm_pipeline.sample.common.REFERENCE_DATE`.
We never tune these rates to make a matcher look good: they say how registries go wrong.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from faker import Faker
from nicknames import NickNamer

from cmdm_pipeline.sample.common import REFERENCE_DATE, Weighted, between, pick
from cmdm_pipeline.sample.generator import TRUTH_COLUMNS, TRUTH_FILE, write_csv
from cmdm_pipeline.sample.noise import KEYBOARD_NEIGHBOURS, NICKNAMES, fold_accents, slug
from cmdm_pipeline.sample.world import PERSONAL_EMAIL_PATTERNS

SOURCE = "registry"
REGISTRY_FILE = "registry.csv"
COLUMNS = (
    "RecordId", "GivenName", "FamilyName", "BirthDate", "BirthPlace", "PostCode", "Occupation", "Gender",
)
EMAIL_COLUMN = "Email"

#: Schema attributes the registry needs beyond the shipped cmdm.yaml (add under ``schema.attributes``).
REGISTRY_ATTRIBUTES: dict[str, dict[str, Any]] = {
    "birth_place": {
        "kind": "city",
        "match": True,
        "description": "Town or city where the person was born, as the registry wrote it.",
    },
    "occupation": {
        "kind": "text",
        "match": True,
        "description": "Occupation the person gave when the registry entry was made.",
    },
}


def registry_source(path: Path, emails: bool = False) -> dict[str, Any]:
    """Returns the ``sources:`` entry of cmdm.yaml that reads ``path`` (a registry.csv)."""
    columns = {
        "GivenName": "first_name",
        "FamilyName": "last_name",
        "BirthDate": "date_of_birth",
        "BirthPlace": "birth_place",
        "PostCode": "postcode",
        "Occupation": "occupation",
        "Gender": "gender",
    }
    if emails:
        columns[EMAIL_COLUMN] = "email"
    return {
        "name": SOURCE,
        "kind": "csv",
        "path": str(path),
        "id_column": "RecordId",
        "trust_rank": 1,
        "record_type": "customer",
        "party_type": "person",
        "date_formats": ["%Y-%m-%d"],
        "columns": columns,
    }


# --------------------------------------------------------------------------------------------
# Rates. Unless said otherwise, a rate is the share of records (rows) it applies to.

# People and their records
SINGLETON_SHARE = 0.40  # people with exactly one record
FEW_RECORDS = {2: 0.18, 3: 0.13, 4: 0.09, 5: 0.06, 6: 0.05}  # share of people with 2-6 records
TAIL_SHARE = 1 - SINGLETON_SHARE - sum(FEW_RECORDS.values())  # people with 7 to MAX_RECORDS records
MAX_RECORDS = 25  # most records of one person
TAIL_EXPONENT = 2.0  # the tail falls off as k ** -TAIL_EXPONENT
NAMESAKE_RATE = 0.02  # of people: same given and family name as an earlier person, nothing else shared
SIBLING_RATE = 0.03  # of people: a brother or sister of an earlier person (family name, birth place, postcode)

# Names
GIVEN_ZIPF = 0.7  # frequency of the k-th commonest given name ~ k ** -GIVEN_ZIPF
FAMILY_ZIPF = 0.6  # family names are spread wider than given names
ORIGINAL_SCRIPT_RATE = 0.15  # of Russian/Ukrainian/Greek records: name in Cyrillic or Greek
UMLAUT_DIGRAPH_RATE = 0.15  # of German records: ä/ö/ü/ß written ae/oe/ue/ss (Mueller)
UMLAUT_DROP_RATE = 0.10  # of German records: ä/ö/ü/ß written a/o/u/ss (Muller)
ACCENT_DROP_RATE = 0.15  # of other Latin-script records: accents left off (an old system, a hurried clerk)
NICKNAME_RATE = 0.25  # of records of a given name that has a known nickname: the nickname instead
INITIAL_RATE = 0.03  # given name as an initial only ("J.")
MIDDLE_HOLDER_RATE = 0.6  # of people: have a middle name (a patronymic in Russia and Ukraine)
MIDDLE_SHOWN_RATE = 0.10  # of records of middle-name holders: middle name or initial added ("John P.")
NAME_SWAP_RATE = 0.03  # given and family name in each other's field
NAME_TYPO_RATE = 0.30  # at least one typo in a name
BOTH_NAMES_TYPO_SHARE = 0.15  # of records with a name typo: typos in both names
SECOND_TYPO_RATE = 0.20  # of misspelt names: a second typo in the same name
PHONETIC_TYPO_SHARE = 0.25  # of typos: a phonetic respelling (ph/f, c/k, y/i) where the name allows one
UPPER_CASE_RATE = 0.08  # names in UPPER CASE
LOWER_CASE_RATE = 0.02  # names in lower case
TITLE_CASE_RATE = 0.03  # names forced to Title Case ("Mcdonald", "Van Der Berg")

# Missing values
MISSING = {
    "given": 0.03, "family": 0.02, "birth_date": 0.12, "birth_place": 0.25, "postcode": 0.20,
    "occupation": 0.35, "gender": 0.15,
}

# Birth dates: one person's date, drawn for births between these days, most around the mode
OLDEST_BIRTH = date(1901, 1, 1)
YOUNGEST_BIRTH = date(REFERENCE_DATE.year - 18, REFERENCE_DATE.month, REFERENCE_DATE.day)
COMMONEST_BIRTH = date(1952, 1, 1)
SIBLING_MAX_YEARS = 12  # siblings are born at most this many years apart
DOB_SWAP_RATE = 0.05  # of records with a date whose day could be a month: day and month swapped
DOB_DAYS_OFF_RATE = 0.04  # of records with a date: a day off by one or a few days
DOB_YEAR_TYPO_RATE = 0.04  # of records with a date: a digit typo in the year (last two digits)
DOB_YEAR_ONLY_RATE = 0.03  # of records with a date: only the year known, written YYYY-01-01
DOB_OTHER_RATE = 0.01  # of records with a date: a completely different date

# Birth places
TOWNS_PER_CULTURE = 300  # Faker town names drawn per country (fewer where Faker has fewer)
TOWN_ZIPF = 0.8  # big towns see more births
PLACE_TYPO_RATE = 0.10  # of records with a birth place: a typo
PLACE_VARIANT_RATE = 0.05  # of records with a birth place: another spelling (accents, St./Saint, romanisation)
PLACE_WRONG_RATE = 0.03  # of records with a birth place: a different town

# Postcodes
POSTCODE_OTHER_RATE = 0.15  # of records with a postcode: an older or newer address's postcode
POSTCODE_TYPO_RATE = 0.05  # of records with a postcode: a typo or cut short
MAX_OTHER_POSTCODES = 2  # addresses a person had besides the current one

# Occupations
JOBS_PER_CULTURE = 24  # distinct job titles per country (about 250 in all)
JOB_ZIPF = 1.0  # a few jobs are very common
OCCUPATION_OTHER_RATE = 0.15  # of records with an occupation: the person's other job (a career change)
OCCUPATION_VARIANT_RATE = 0.05  # of records with an occupation: spelt differently

# Gender
GENDER_WRONG_RATE = 0.01  # of records with a gender: the other one
GENDER_SPELLINGS = Weighted(({"f": "f", "m": "m"}, {"f": "female", "m": "male"}, {"f": "F", "m": "M"}),
                            (0.70, 0.15, 0.15))

# E-mail (only with emails=True)
EMAIL_CURRENT_RATE = 0.70  # the person's e-mail address
EMAIL_OLD_RATE = 0.10  # the person's second (older) address
EMAIL_TYPO_RATE = 0.05  # of records with an address: a typo in it

MAX_RECORDS_TOTAL = 9_000_000  # record ids are "R" and seven digits


# --------------------------------------------------------------------------------------------
# Cultures


@dataclass(frozen=True, slots=True)
class Culture:
    """Where a person comes from: the Faker locale of their names and places, and how they are written."""

    locale: str
    weight: float  # share of the people
    script: str  # "latin", or the romanisation tables of the script: "ru", "uk", "el"
    providers: tuple[str, ...]  # e-mail providers

    @property
    def language(self) -> str:
        return self.locale[:2]


CULTURES = (
    Culture("en_GB", 0.15, "latin", ("gmail.com", "hotmail.co.uk", "btinternet.com", "yahoo.co.uk")),
    Culture("en_US", 0.13, "latin", ("gmail.com", "yahoo.com", "aol.com", "hotmail.com", "outlook.com")),
    Culture("de_DE", 0.12, "latin", ("gmx.de", "web.de", "t-online.de", "gmail.com")),
    Culture("fr_FR", 0.10, "latin", ("orange.fr", "free.fr", "laposte.net", "gmail.com")),
    Culture("it_IT", 0.08, "latin", ("libero.it", "virgilio.it", "gmail.com", "alice.it")),
    Culture("es_ES", 0.07, "latin", ("gmail.com", "hotmail.es", "telefonica.net", "yahoo.es")),
    Culture("nl_NL", 0.05, "latin", ("ziggo.nl", "kpnmail.nl", "gmail.com", "hotmail.nl")),
    Culture("pl_PL", 0.07, "latin", ("wp.pl", "onet.pl", "o2.pl", "interia.pl", "gmail.com")),
    Culture("ru_RU", 0.09, "ru", ("mail.ru", "yandex.ru", "rambler.ru", "gmail.com")),
    Culture("uk_UA", 0.05, "uk", ("ukr.net", "i.ua", "meta.ua", "gmail.com")),
    Culture("el_GR", 0.04, "el", ("gmail.com", "yahoo.gr", "otenet.gr", "hotmail.gr")),
    Culture("cs_CZ", 0.05, "latin", ("seznam.cz", "email.cz", "centrum.cz", "gmail.com")),
)
CULTURE_WEIGHTS = Weighted(CULTURES, [culture.weight for culture in CULTURES])

# Diminutives by language and gender. English names use the nicknames package (and sample.py's
# curated list first, whose nicknames are the common ones); these formal names are also planted in
# the name pools, so nicknames occur in every culture, not only where Faker happens to draw them.
DIMINUTIVES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "de": {
        "m": {"Johann": ("Hans",), "Johannes": ("Hans", "Jo"), "Wilhelm": ("Willi", "Wim"), "Friedrich": ("Fritz",),
              "Heinrich": ("Heinz", "Heini"), "Josef": ("Sepp", "Jupp"), "Alexander": ("Alex",),
              "Christian": ("Chris",), "Matthias": ("Matze",)},
        "f": {"Elisabeth": ("Lisa", "Liesel", "Elli"), "Katharina": ("Käthe", "Kathi"), "Margarete": ("Grete",),
              "Gertrud": ("Trude",), "Susanne": ("Susi",)},
    },
    "fr": {
        "m": {"Frédéric": ("Fred",), "Christophe": ("Chris",), "Alexandre": ("Alex",), "Philippe": ("Phil",),
              "Dominique": ("Dom",), "Maximilien": ("Max",)},
        "f": {"Nathalie": ("Nath",), "Catherine": ("Cathy",), "Isabelle": ("Isa",), "Élisabeth": ("Babette", "Lise")},
    },
    "it": {
        "m": {"Giuseppe": ("Peppe", "Beppe", "Pino"), "Francesco": ("Franco", "Checco"),
              "Giovanni": ("Gianni", "Nanni"), "Antonio": ("Toni", "Totò"), "Alessandro": ("Sandro",),
              "Vincenzo": ("Enzo",), "Domenico": ("Mimmo",)},
        "f": {"Giuseppina": ("Pina",), "Francesca": ("Franca",), "Elisabetta": ("Betta",)},
    },
    "es": {
        "m": {"José": ("Pepe",), "Francisco": ("Paco", "Pancho"), "Manuel": ("Manolo",), "Ignacio": ("Nacho",),
              "Enrique": ("Quique",), "Antonio": ("Toño",), "Jesús": ("Chuy",)},
        "f": {"Dolores": ("Lola",), "Concepción": ("Concha",), "Mercedes": ("Merche",), "Rosario": ("Charo",),
              "Guadalupe": ("Lupe",)},
    },
    "nl": {
        "m": {"Cornelis": ("Kees",), "Hendrik": ("Henk",), "Johannes": ("Jan", "Hans"), "Jacobus": ("Koos",),
              "Wilhelmus": ("Wim",), "Petrus": ("Piet",)},
        "f": {"Johanna": ("Jo", "Hanneke"), "Catharina": ("Toos", "Tineke"), "Elisabeth": ("Els", "Lies"),
              "Maria": ("Mies", "Ria")},
    },
    "pl": {
        "m": {"Aleksander": ("Olek",), "Tomasz": ("Tomek",), "Krzysztof": ("Krzysiek",), "Wojciech": ("Wojtek",),
              "Józef": ("Józek",), "Stanisław": ("Staszek",), "Piotr": ("Piotrek",)},
        "f": {"Aleksandra": ("Ola",), "Małgorzata": ("Gosia",), "Katarzyna": ("Kasia",), "Magdalena": ("Magda",),
              "Agnieszka": ("Aga",), "Barbara": ("Basia",), "Elżbieta": ("Ela",), "Joanna": ("Asia",)},
    },
    "cs": {
        "m": {"Jan": ("Honza",), "Josef": ("Pepa",), "Jiří": ("Jirka",), "František": ("Franta",),
              "Václav": ("Vašek",), "Jaroslav": ("Jarda",), "Zdeněk": ("Zdenda",)},
        "f": {"Kateřina": ("Katka",), "Lucie": ("Lucka",), "Marie": ("Máňa",), "Alžběta": ("Bětka",)},
    },
    "ru": {
        "m": {"Александр": ("Саша",), "Алексей": ("Алёша",), "Дмитрий": ("Дима",), "Михаил": ("Миша",),
              "Николай": ("Коля",), "Сергей": ("Серёжа",), "Владимир": ("Володя", "Вова"), "Иван": ("Ваня",),
              "Евгений": ("Женя",), "Юрий": ("Юра",), "Виктор": ("Витя",), "Павел": ("Паша",),
              "Григорий": ("Гриша",), "Константин": ("Костя",)},
        "f": {"Екатерина": ("Катя",), "Елена": ("Лена",), "Мария": ("Маша",), "Наталья": ("Наташа",),
              "Ольга": ("Оля",), "Татьяна": ("Таня",), "Анастасия": ("Настя",), "Светлана": ("Света",),
              "Людмила": ("Люда",), "Ирина": ("Ира",), "Анна": ("Аня",), "Надежда": ("Надя",)},
    },
    "uk": {
        "m": {"Олександр": ("Сашко",), "Володимир": ("Володя",), "Микола": ("Коля",), "Іван": ("Івась",),
              "Петро": ("Петрик",), "Михайло": ("Михась",), "Андрій": ("Андрійко",)},
        "f": {"Олена": ("Оленка",), "Марія": ("Марічка",), "Катерина": ("Катря",), "Наталія": ("Наталка",),
              "Оксана": ("Ксеня",), "Тетяна": ("Таня",)},
    },
    "el": {
        "m": {"Γεώργιος": ("Γιώργος",), "Ιωάννης": ("Γιάννης",), "Κωνσταντίνος": ("Κώστας",),
              "Δημήτριος": ("Δημήτρης", "Μήτσος"), "Νικόλαος": ("Νίκος",), "Παναγιώτης": ("Πάνος",),
              "Αθανάσιος": ("Θανάσης",), "Ευάγγελος": ("Βαγγέλης",), "Αλέξανδρος": ("Αλέκος",)},
        "f": {"Αικατερίνη": ("Κατερίνα",), "Μαρία": ("Μαίρη",), "Ελένη": ("Λένα",), "Βασιλική": ("Βάσω",),
              "Παναγιώτα": ("Γιώτα",), "Αναστασία": ("Τασούλα",)},
    },
}


# --------------------------------------------------------------------------------------------
# Romanisation: small per-letter tables of the systems clerks actually used. No package does
# all of them, and the point is several spellings of one name, not one correct one.


@dataclass(frozen=True, slots=True)
class Romanisation:
    """One romanisation system: letters and two-letter groups, with a few contextual rules."""

    letters: Mapping[str, str]  # lower-case source letters (or pairs) -> Latin
    initial: Mapping[str, str] = field(default_factory=dict)  # at a word's start (ye for е)
    initial_after_vowel: bool = True  # the initial forms also follow a vowel (Russian BGN: Andreyev)
    final: Mapping[str, str] = field(default_factory=dict)  # at a word's end (ий -> i)
    between_vowels: Mapping[str, str] = field(default_factory=dict)  # с -> ss, so it is not read "z"
    before_front: Mapping[str, str] = field(default_factory=dict)  # Greek γ before ε, η, ι, υ -> y


_RU = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "з": "z", "и": "i", "к": "k", "л": "l",
    "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "ы": "y",
    "ъ": "", "ь": "", "э": "e",
}
_UK = {
    "а": "a", "б": "b", "в": "v", "г": "h", "ґ": "g", "д": "d", "е": "e", "з": "z", "и": "y", "і": "i",
    "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t", "у": "u",
    "ф": "f", "ь": "", "'": "", "ʼ": "",
}
_EL = {
    "α": "a", "β": "v", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "i", "θ": "th", "ι": "i", "κ": "k",
    "λ": "l", "μ": "m", "ν": "n", "ξ": "x", "ο": "o", "π": "p", "ρ": "r", "σ": "s", "ς": "s", "τ": "t",
    "υ": "y", "φ": "f", "χ": "ch", "ψ": "ps", "ω": "o", "ϊ": "i", "ϋ": "y",
    "ου": "ou", "αι": "ai", "ει": "ei", "οι": "oi", "αυ": "av", "ευ": "ev", "ηυ": "iv",
    "γγ": "ng", "γκ": "gk", "γξ": "nx", "γχ": "nch", "μπ": "mp", "ντ": "nt",
}
_EL_INITIAL = {"μπ": "b", "ντ": "d", "γκ": "g"}
_VOICELESS_S = {"с": "ss"}

ROMANISATIONS: dict[str, dict[str, Romanisation]] = {
    "ru": {
        "bgn": Romanisation(
            {**_RU, "ё": "yo", "ж": "zh", "й": "y", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch",
             "ю": "yu", "я": "ya"},
            initial={"е": "ye"},
        ),
        "icao": Romanisation(
            {**_RU, "ё": "e", "ж": "zh", "й": "i", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch",
             "ъ": "ie", "ю": "iu", "я": "ia"},
        ),
        "informal": Romanisation(
            {**_RU, "ё": "yo", "ж": "zh", "й": "y", "х": "h", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "sch",
             "ю": "yu", "я": "ya"},
            final={"ий": "y", "ый": "y"},
        ),
        "german": Romanisation(
            {**_RU, "в": "w", "ё": "jo", "ж": "sch", "з": "s", "й": "j", "х": "ch", "ц": "z", "ч": "tsch",
             "ш": "sch", "щ": "schtsch", "ю": "ju", "я": "ja", "кс": "x"},
            initial={"е": "je"}, final={"ий": "i", "ый": "y"}, between_vowels=_VOICELESS_S,
        ),
        "french": Romanisation(
            {**_RU, "ё": "io", "ж": "j", "й": "i", "у": "ou", "х": "kh", "ц": "ts", "ч": "tch", "ш": "ch",
             "щ": "chtch", "ю": "iou", "я": "ia", "кс": "x"},
            final={"ий": "i", "ый": "y"}, between_vowels=_VOICELESS_S,
        ),
        "scholarly": Romanisation(
            {**_RU, "ё": "ë", "ж": "ž", "й": "j", "х": "ch", "ц": "c", "ч": "č", "ш": "š", "щ": "šč",
             "ь": "'", "э": "è", "ю": "ju", "я": "ja"},
        ),
    },
    "uk": {
        "national": Romanisation(  # the official system since 2010 (passports)
            {**_UK, "є": "ie", "ж": "zh", "ї": "i", "й": "i", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh",
             "щ": "shch", "ю": "iu", "я": "ia", "зг": "zgh"},
            initial={"є": "ye", "ї": "yi", "й": "y", "ю": "yu", "я": "ya"}, initial_after_vowel=False,
        ),
        "bgn": Romanisation(
            {**_UK, "є": "ye", "ж": "zh", "ї": "yi", "й": "y", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh",
             "щ": "shch", "ю": "yu", "я": "ya"},
        ),
        "german": Romanisation(
            {**_UK, "в": "w", "є": "je", "ж": "sch", "з": "s", "ї": "ji", "й": "j", "х": "ch", "ц": "z",
             "ч": "tsch", "ш": "sch", "щ": "schtsch", "ю": "ju", "я": "ja"},
            between_vowels=_VOICELESS_S,
        ),
        "french": Romanisation(
            {**_UK, "є": "ie", "ж": "j", "ї": "ï", "й": "ï", "у": "ou", "х": "kh", "ц": "ts", "ч": "tch",
             "ш": "ch", "щ": "chtch", "ю": "iou", "я": "ia"},
            final={"ій": "i"}, between_vowels=_VOICELESS_S,
        ),
        "scholarly": Romanisation(
            {**_UK, "є": "je", "ж": "ž", "ї": "ji", "й": "j", "х": "ch", "ц": "c", "ч": "č", "ш": "š",
             "щ": "šč", "ь": "'", "ю": "ju", "я": "ja"},
        ),
    },
    "el": {
        "elot": Romanisation(_EL, initial=_EL_INITIAL, initial_after_vowel=False),  # ELOT 743, passports
        "phonetic": Romanisation(
            {**_EL, "υ": "i", "χ": "h", "αι": "e", "ει": "i", "οι": "i", "γκ": "g", "μπ": "b", "ντ": "d"},
        ),
        "bgn": Romanisation(
            {**_EL, "δ": "dh", "χ": "kh", "μπ": "mb", "ντ": "nd"},
            initial=_EL_INITIAL, initial_after_vowel=False, before_front={"γ": "y"},
        ),
        "classical": Romanisation(
            {**_EL, "β": "b", "η": "e", "φ": "ph", "αι": "ae", "αυ": "au", "ευ": "eu", "ηυ": "eu"},
            initial=_EL_INITIAL, initial_after_vowel=False,
        ),
    },
}
#: The spelling a registry writes by default (towns, jobs); others are variants.
CANONICAL_SYSTEM = {"ru": "bgn", "uk": "national", "el": "elot"}
ORIGINAL = "original"
# How Latin-script records write names (they have no romanisation to choose).
AS_IS, UMLAUT_DIGRAPHS, UMLAUT_DROPPED, ACCENTS_DROPPED = "as is", "umlaut digraphs", "umlauts dropped", "no accents"
# How often each system is used for the names of records not in the original script.
SYSTEM_WEIGHTS: dict[str, Weighted[str]] = {
    "ru": Weighted(("bgn", "icao", "informal", "german", "french", "scholarly"), (35, 24, 18, 9, 7, 7)),
    "uk": Weighted(("national", "bgn", "german", "french", "scholarly"), (42, 30, 12, 8, 8)),
    "el": Weighted(("elot", "phonetic", "bgn", "classical"), (53, 24, 12, 11)),
}
_VOWELS = frozenset("аеёиоуыэюяєіїαεηιουωϊϋ")
_SIGNS = frozenset("ъь")  # Russian е after a hard or soft sign is also "ye" (Darya, Ilyich)
_GREEK_FRONT = frozenset("εηιυ")
_GREEK_TONOS = str.maketrans("άέήίόύώΐΰ", "αεηιουωϊϋ")


@lru_cache(maxsize=131072)
def romanise(text: str, script: str, system: str) -> str:
    """Returns ``text`` (Cyrillic or Greek) in the Latin letters of ``system``; other characters kept."""
    if system == ORIGINAL:
        return text
    table = ROMANISATIONS[script][system]
    low = text.lower().translate(_GREEK_TONOS)
    out: list[str] = []
    i = 0
    while i < len(low):
        piece, step = _romanise_at(low, i, table)
        source = text[i]
        if source.isupper() and piece:
            # A whole word in capitals stays in capitals (Юрий -> Yuriy, ЮРИЙ -> YURIY).
            word_upper = i + 1 < len(text) and text[i + 1].isupper()
            piece = piece.upper() if word_upper else piece[0].upper() + piece[1:]
        out.append(piece)
        i += step
    return "".join(out)


def _romanise_at(low: str, i: int, table: Romanisation) -> tuple[str, int]:
    """Returns the Latin for the letter or pair at ``low[i]``, and how many letters it used."""
    previous = low[i - 1] if i else " "
    at_start = not previous.isalpha()
    after_vowel = previous in _VOWELS or previous in _SIGNS
    for size in (2, 1):
        key = low[i : i + size]
        if len(key) < size:
            continue
        after = low[i + size] if i + size < len(low) else " "
        if key in table.final and not after.isalpha():
            return table.final[key], size
        if key in table.initial and (at_start or (table.initial_after_vowel and after_vowel)):
            return table.initial[key], size
        if key in table.before_front and after in _GREEK_FRONT:
            return table.before_front[key], size
        if key in table.between_vowels and previous in _VOWELS and after in _VOWELS:
            return table.between_vowels[key], size
        if key in table.letters:
            return table.letters[key], size
    return low[i], 1


# --------------------------------------------------------------------------------------------
# Text noise


PHONETIC_SWAPS = (
    ("ph", "f"), ("f", "ph"), ("c", "k"), ("k", "c"), ("y", "i"), ("i", "y"), ("ie", "y"), ("y", "ie"),
    ("ck", "k"), ("th", "t"), ("ei", "ie"), ("ie", "ei"), ("z", "s"), ("s", "z"), ("w", "v"), ("v", "w"),
    ("ou", "u"), ("tz", "z"), ("dt", "t"), ("ai", "ay"), ("sch", "sh"), ("sh", "sch"), ("x", "ks"),
    ("ks", "x"), ("qu", "kw"), ("j", "y"),
)
GERMAN_DIGRAPHS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"})
GERMAN_PLAIN = str.maketrans({"ä": "a", "ö": "o", "ü": "u", "Ä": "A", "Ö": "O", "Ü": "U", "ß": "ss"})
PLACE_ABBREVIATIONS = (
    ("Saint-", "St-"), ("Saint ", "St. "), ("Sainte-", "Ste-"), ("Sankt ", "St. "), ("San ", "S. "),
    ("Bad ", "B. "), (" am ", " a. "), (" an der ", " a. d. "), ("-", " "), (" nad ", " n. "),
)
JOB_ABBREVIATIONS = (
    ("Manager", "Mgr"), ("manager", "mgr"), ("Assistant", "Asst."), ("assistant", "asst."),
    ("Engineer", "Eng."), ("engineer", "eng."), ("Technician", "Tech."), ("technician", "tech."),
    ("Director", "Dir."), ("Officer", "Off."), (" and ", " & "), ("-", " "), (", ", " "),
)


def _row_neighbours(rows: Sequence[str]) -> dict[str, str]:
    """Returns each letter's left and right neighbours on a keyboard given by its letter rows."""
    return {
        ch: row[max(0, i - 1) : i] + row[i + 1 : i + 2]
        for row in rows
        for i, ch in enumerate(row)
    }


# Latin keys as sample.py has them; Ukrainian and Russian ЙЦУКЕН and Greek layouts by row. Greek ς
# (on the w key) is left out: it is typed only at a word's end, never in place of another letter.
NEIGHBOURS: dict[str, str] = {
    **_row_neighbours(("йцукенгшщзхї", "фівапролджє", "ячсмитьбю")),
    **_row_neighbours(("йцукенгшщзхъ", "фывапролджэ", "ячсмитьбю")),
    **_row_neighbours(("ερτυθιοπ", "ασδφγηξκλ", "ζχψωβνμ")),
    **KEYBOARD_NEIGHBOURS,
}


class Noise:
    """Seeded corruption of the values a registry clerk keys in."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def chance(self, probability: float) -> bool:
        """Returns True with the given probability."""
        return self.rng.random() < probability

    def typos(self, text: str) -> str:
        """Returns ``text`` with one typo, sometimes two."""
        text = self.typo(text)
        return self.typo(text) if self.chance(SECOND_TYPO_RATE) else text

    def typo(self, text: str) -> str:
        """Returns ``text`` with one slip: a phonetic respelling or a keyboard slip."""
        if len(text) < 2:
            return text
        if self.chance(PHONETIC_TYPO_SHARE):
            respelt = self.respell(text)
            if respelt != text:
                return respelt
        return self.slip(text)

    def respell(self, text: str) -> str:
        """Returns ``text`` with one sound spelt another way (Philipp -> Filipp), or unchanged."""
        low = text.lower()
        options = [(i, old, new) for old, new in PHONETIC_SWAPS for i in _occurrences(low, old)]
        if not options:
            return text
        i, old, new = pick(self.rng, options)
        if text[i].isupper():
            new = new.upper() if text[i : i + len(old)].isupper() and len(old) > 1 else new.capitalize()
        return text[:i] + new + text[i + len(old) :]

    def slip(self, text: str) -> str:
        """Returns ``text`` with a keyboard slip: neighbour key, dropped, added, swapped or (un)doubled letter."""
        chars = list(text)
        # First letters are rarely wrong: people see them best.
        letters = [i for i, ch in enumerate(chars) if ch.isalpha()][1:]
        if not letters:
            return text
        i = pick(self.rng, letters)
        kind = int(self.rng.random() * 6)
        if kind == 0 and i + 1 < len(chars) and chars[i + 1].isalpha():
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif kind == 1 and len(letters) > 2:
            del chars[i]
        elif kind == 2:
            chars.insert(i, chars[i])
        elif kind == 3 and (doubles := [j for j in letters if chars[j].lower() == chars[j - 1].lower()]):
            del chars[pick(self.rng, doubles)]
        elif kind == 4:
            chars.insert(i, self._neighbour(chars[i]))
        else:
            chars[i] = self._neighbour(chars[i])
        return "".join(chars)

    def _neighbour(self, ch: str) -> str:
        """Returns a key next to ``ch`` on a QWERTY, ЙЦУКЕН or Greek keyboard, in ``ch``'s case."""
        near = NEIGHBOURS.get(ch.lower())
        if near is None:
            return ch
        key = pick(self.rng, near)
        return key.upper() if ch.isupper() else key


def _occurrences(text: str, part: str) -> list[int]:
    """Returns the start of every occurrence of ``part`` in ``text`` after its first letter."""
    found, start = [], 1
    while (i := text.find(part, start)) != -1:
        found.append(i)
        start = i + 1
    return found


@lru_cache(maxsize=1)
def _nicknamer() -> NickNamer:
    """Returns the nicknames package's lookup, loaded once."""
    return NickNamer()


@lru_cache(maxsize=65536)
def nicknames_of(name: str, language: str, gender: str) -> tuple[str, ...]:
    """Returns the known nicknames of a given name, most common first where known."""
    own = DIMINUTIVES.get(language, {}).get(gender, {}).get(name)
    if own:
        return own
    if language != "en":
        return ()
    if name in NICKNAMES:
        return NICKNAMES[name]
    return tuple(sorted(nick.title() for nick in _nicknamer().nicknames_of(name.lower())))


# --------------------------------------------------------------------------------------------
# Pools: Faker is slow per call, so each culture's names, towns, postcodes and jobs are drawn once.


@dataclass(slots=True)
class CulturePool:
    """Frequency-weighted names, towns and jobs of one culture, and its postcodes."""

    culture: Culture
    given: dict[str, Weighted[str]]  # by gender, "f" or "m"
    middle: dict[str, Weighted[str]]  # by gender: patronymics in Russia and Ukraine, else given names
    family: dict[str, Weighted[str]]  # by gender: Russian, Polish, Czech and Greek family names differ by it
    towns: Weighted[str]
    postcodes: list[str]
    jobs: Weighted[str]


def zipf_weighted(draws: Sequence[str], exponent: float, planted: Sequence[str] = ()) -> Weighted[str]:
    """Returns the distinct ``draws``, weighted by a Zipf law over how often each was drawn.

    Faker weights some locales' names (en_US) and draws others uniformly; ranking by how often a
    name came up, then weighting by rank, gives every culture common names and a long tail.
    ``planted`` names join at an average count, so they are neither the commonest nor rare.
    """
    counts = Counter(draws)
    average = max(1, round(len(draws) / max(1, len(counts))))
    for name in planted:
        counts[name] += average
    ranked = sorted(counts, key=lambda name: -counts[name])  # stable: ties keep the order first drawn
    return Weighted(ranked, [1 / (rank + 1) ** exponent for rank in range(len(ranked))])


def build_pools(seed: int, people: int) -> dict[str, CulturePool]:
    """Returns a :class:`CulturePool` per locale, sized to the expected number of people there."""
    return {
        culture.locale: _culture_pool(culture, seed, max(40, int(people * culture.weight)))
        for culture in CULTURES
    }


def _culture_pool(culture: Culture, seed: int, people: int) -> CulturePool:
    """Returns the pools of one culture, drawn from its own seeded Faker."""
    fake = Faker(culture.locale)
    fake.seed_instance(f"{seed}:{culture.locale}")
    names = min(3000, 150 + people)
    planted = DIMINUTIVES.get(culture.language, {})
    given = {
        "f": zipf_weighted([fake.first_name_female() for _ in range(names)], GIVEN_ZIPF, tuple(planted.get("f", ()))),
        "m": zipf_weighted([fake.first_name_male() for _ in range(names)], GIVEN_ZIPF, tuple(planted.get("m", ()))),
    }
    if culture.script in ("ru", "uk"):
        middle = {
            "f": zipf_weighted([fake.middle_name_female() for _ in range(names // 2)], GIVEN_ZIPF),
            "m": zipf_weighted([fake.middle_name_male() for _ in range(names // 2)], GIVEN_ZIPF),
        }
    else:
        middle = given
    family = {
        "f": zipf_weighted([fake.last_name_female() for _ in range(names)], FAMILY_ZIPF),
        "m": zipf_weighted([fake.last_name_male() for _ in range(names)], FAMILY_ZIPF),
    }
    towns = zipf_weighted([_town(fake, culture) for _ in range(TOWNS_PER_CULTURE)], TOWN_ZIPF)
    postcodes = [_postcode(fake.postcode()) for _ in range(min(4000, 100 + people))]
    jobs = [_capitalised(fake.job()) for _ in range(JOBS_PER_CULTURE * 8)]
    distinct_jobs = list(dict.fromkeys(jobs))[:JOBS_PER_CULTURE]
    return CulturePool(
        culture=culture,
        given=given,
        middle=middle,
        family=family,
        towns=towns,
        postcodes=postcodes,
        jobs=Weighted(distinct_jobs, [1 / (rank + 1) ** JOB_ZIPF for rank in range(len(distinct_jobs))]),
    )


def _town(fake: Faker, culture: Culture) -> str:
    """Returns a town name of the culture's country, without a "г." or "село" prefix."""
    if culture.script in ("ru", "uk"):
        return fake.city_name()
    if culture.locale == "it_IT":
        # Faker's own it_IT city() draws from a set, so its output changes with PYTHONHASHSEED;
        # the postcode table it is built from is an ordered dict (as sample.py does it).
        provider = next(p for p in fake.get_providers() if type(p).__module__.endswith("address.it_IT"))
        town, _ = fake.random_element(provider.cap_city_province[fake.postcode()])
        return town
    return fake.city()


def _postcode(code: str) -> str:
    """Returns a Faker postcode without the Greek "ΤΚ" prefix some el_GR codes carry."""
    return code.removeprefix("ΤΚ ")


def _capitalised(text: str) -> str:
    """Returns ``text`` with a capital first letter (fr_FR jobs come in lower case)."""
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------------------------
# People


def _records_per_person() -> Weighted[int]:
    """Returns the distribution of records per person: 40% singletons, most others 2-6, a tail."""
    tail = {k: k**-TAIL_EXPONENT for k in range(max(FEW_RECORDS) + 1, MAX_RECORDS + 1)}
    scale = TAIL_SHARE / sum(tail.values())
    weights = {1: SINGLETON_SHARE, **FEW_RECORDS, **{k: w * scale for k, w in tail.items()}}
    return Weighted(tuple(weights), tuple(weights.values()))


RECORDS_PER_PERSON = _records_per_person()


@dataclass(slots=True)
class Person:
    """A true person: their names in their own script, and what their registry entries say."""

    person_id: str
    pool: CulturePool
    gender: str  # "f" or "m"
    given: str
    middle: str
    family: str
    birth: date
    birth_place: str
    postcodes: tuple[str, ...]  # the current one first, then older or newer ones
    occupation: str
    other_occupation: str
    records: int
    emails: tuple[str, str] = ("", "")  # current and older address, with emails=True

    @property
    def culture(self) -> Culture:
        return self.pool.culture


class Population:
    """Builds the true people until their records add up to exactly ``records``."""

    def __init__(self, records: int, seed: int) -> None:
        self.records = records
        self.rng = random.Random(f"{seed}:people")
        self.pools = build_pools(seed, records // 3)
        self.persons: list[Person] = []

    def build(self) -> list[Person]:
        """Returns the people; the last one's record count is cut to make the total exact."""
        planned = 0
        while planned < self.records:
            person = self._next()
            person.records = min(person.records, self.records - planned)
            planned += person.records
            self.persons.append(person)
        return self.persons

    def _next(self) -> Person:
        """Returns a new person: a namesake or sibling of an earlier one now and then."""
        roll = self.rng.random()
        if self.persons and roll < NAMESAKE_RATE:
            return self._namesake(pick(self.rng, self.persons))
        if self.persons and roll < NAMESAKE_RATE + SIBLING_RATE:
            return self._sibling(pick(self.rng, self.persons))
        pool = self.pools[CULTURE_WEIGHTS.draw(self.rng).locale]
        gender = "f" if self.rng.random() < 0.5 else "m"
        return self._person(pool, gender, pool.given[gender].draw(self.rng), pool.family[gender].draw(self.rng))

    def _namesake(self, original: Person) -> Person:
        """Returns a different person with the same given and family name as ``original``."""
        return self._person(original.pool, original.gender, original.given, original.family)

    def _sibling(self, elder: Person) -> Person:
        """Returns a brother or sister: same family name, birth place and home, another given name.

        Of the same gender, as Russian, Polish, Czech and Greek family names differ by gender.
        """
        pool, gender = elder.pool, elder.gender
        given = pool.given[gender].draw(self.rng)
        while given == elder.given:
            given = pool.given[gender].draw(self.rng)
        gap = between(self.rng, 1, SIBLING_MAX_YEARS * 365) * (1 if self.rng.random() < 0.5 else -1)
        birth = min(max(elder.birth + timedelta(days=gap), OLDEST_BIRTH), YOUNGEST_BIRTH)
        person = self._person(pool, gender, given, elder.family, birth=birth)
        person.birth_place = elder.birth_place
        person.postcodes = (elder.postcodes[0], *person.postcodes[1:])
        return person

    def _person(self, pool: CulturePool, gender: str, given: str, family: str, birth: date | None = None) -> Person:
        """Returns a new person with the given names and everything else drawn."""
        rng = self.rng
        middle = ""
        if rng.random() < MIDDLE_HOLDER_RATE:
            middle = pool.middle[gender].draw(rng)
            while middle == given:
                middle = pool.middle[gender].draw(rng)
        if birth is None:
            birth = date.fromordinal(
                int(rng.triangular(OLDEST_BIRTH.toordinal(), YOUNGEST_BIRTH.toordinal(), COMMONEST_BIRTH.toordinal()))
            )
        occupation = pool.jobs.draw(rng)
        other = pool.jobs.draw(rng)
        while other == occupation:
            other = pool.jobs.draw(rng)
        others = tuple(pick(rng, pool.postcodes) for _ in range(between(rng, 1, MAX_OTHER_POSTCODES)))
        return Person(
            person_id=f"P{len(self.persons) + 1:07d}",
            pool=pool,
            gender=gender,
            given=given,
            middle=middle,
            family=family,
            birth=birth,
            birth_place=pool.towns.draw(rng),
            postcodes=(pick(rng, pool.postcodes), *others),
            occupation=occupation,
            other_occupation=other,
            records=RECORDS_PER_PERSON.draw(rng),
        )


# --------------------------------------------------------------------------------------------
# E-mail addresses (emails=True): drawn from their own random stream


def assign_emails(persons: Sequence[Person], rng: random.Random) -> None:
    """Gives every person a current and an older personal address, unique over all people; returns None."""
    used: set[str] = set()
    for person in persons:
        person.emails = (_email(person, rng, used), _email(person, rng, used))


def _email(person: Person, rng: random.Random, used: set[str]) -> str:
    """Returns an unused address built from a spelling of the person's name at a common provider."""
    culture = person.culture
    system = SYSTEM_WEIGHTS[culture.script].draw(rng) if culture.script in SYSTEM_WEIGHTS else ORIGINAL
    first = slug(romanise(person.given, culture.script, system)) or "x"
    last = slug(romanise(person.family, culture.script, system)) or "x"
    yy = f"{person.birth.year % 100:02d}"
    local = pick(rng, PERSONAL_EMAIL_PATTERNS).format(
        f=first, l=last, i=first[0], j=last[0], nn=between(rng, 1, 99), yy=yy, year=person.birth.year
    )
    domain = pick(rng, culture.providers)
    email = f"{local}@{domain}"
    # Two John Smiths never share an address: the second gets a number.
    while email in used:
        email = f"{local}{between(rng, 1, 999)}@{domain}"
    used.add(email)
    return email


def record_email(person: Person, noise: Noise) -> str:
    """Returns the address one record carries: the current one, the older one, a misspelt one or none."""
    roll = noise.rng.random()
    if roll < EMAIL_CURRENT_RATE:
        email = person.emails[0]
    elif roll < EMAIL_CURRENT_RATE + EMAIL_OLD_RATE:
        email = person.emails[1]
    else:
        return ""
    if noise.chance(EMAIL_TYPO_RATE):
        local, _, domain = email.partition("@")
        email = f"{noise.slip(local) if len(local) > 2 else local}@{domain}"
    return email


# --------------------------------------------------------------------------------------------
# Rendering a person as one registry entry


def render_names(person: Person, noise: Noise, system: str) -> tuple[str, str]:
    """Returns (given, family) as one record writes them."""
    culture = person.culture
    given = person.given
    nicknames = nicknames_of(given, culture.language, person.gender)
    if nicknames and noise.chance(NICKNAME_RATE):
        given = pick(noise.rng, nicknames)
    elif person.middle and noise.chance(MIDDLE_SHOWN_RATE):
        given = f"{given} {person.middle if noise.chance(0.5) else person.middle[0] + '.'}"
    given, family = spell(given, culture, system), spell(person.family, culture, system)
    if noise.chance(INITIAL_RATE) and given:
        given = given[0] + "."
    if noise.chance(NAME_TYPO_RATE):
        roll = noise.rng.random()
        if roll < BOTH_NAMES_TYPO_SHARE:
            given, family = noise.typos(given), noise.typos(family)
        elif roll < BOTH_NAMES_TYPO_SHARE + (1 - BOTH_NAMES_TYPO_SHARE) / 2:
            given = noise.typos(given)
        else:
            family = noise.typos(family)
    roll = noise.rng.random()
    if roll < UPPER_CASE_RATE:
        given, family = given.upper(), family.upper()
    elif roll < UPPER_CASE_RATE + LOWER_CASE_RATE:
        given, family = given.lower(), family.lower()
    elif roll < UPPER_CASE_RATE + LOWER_CASE_RATE + TITLE_CASE_RATE:
        given, family = given.title(), family.title()
    if noise.chance(NAME_SWAP_RATE):
        given, family = family, given
    return given, family


def spelling_system(culture: Culture, noise: Noise) -> str:
    """Returns how one record writes names: a script or romanisation, or how umlauts and accents go.

    One choice per record: the clerk (or the system) that wrote one name wrote the other alike.
    """
    if culture.script in SYSTEM_WEIGHTS:
        return ORIGINAL if noise.chance(ORIGINAL_SCRIPT_RATE) else SYSTEM_WEIGHTS[culture.script].draw(noise.rng)
    roll = noise.rng.random()
    if culture.language == "de":
        if roll < UMLAUT_DIGRAPH_RATE:
            return UMLAUT_DIGRAPHS
        return UMLAUT_DROPPED if roll < UMLAUT_DIGRAPH_RATE + UMLAUT_DROP_RATE else AS_IS
    return ACCENTS_DROPPED if roll < ACCENT_DROP_RATE else AS_IS


def spell(text: str, culture: Culture, system: str) -> str:
    """Returns ``text`` written the way :func:`spelling_system` chose (Юрий -> Iurii, Müller -> Mueller)."""
    if culture.script != "latin":
        return romanise(text, culture.script, system)
    if system == UMLAUT_DIGRAPHS:
        return text.translate(GERMAN_DIGRAPHS)
    if system == UMLAUT_DROPPED:
        return text.translate(GERMAN_PLAIN)
    return fold_accents(text) if system == ACCENTS_DROPPED else text


def render_birth_date(birth: date, noise: Noise) -> str:
    """Returns the birth date as ``YYYY-MM-DD``, with the errors registries make."""
    rng = noise.rng
    roll = rng.random()
    if roll < DOB_SWAP_RATE:
        if birth.day <= 12 and birth.day != birth.month:
            return date(birth.year, birth.day, birth.month).isoformat()
        return birth.isoformat()
    roll -= DOB_SWAP_RATE
    if roll < DOB_DAYS_OFF_RATE:
        days = pick(rng, (1, 1, 1, 2, 3, 7)) * (1 if rng.random() < 0.5 else -1)
        return (birth + timedelta(days=days)).isoformat()
    roll -= DOB_DAYS_OFF_RATE
    if roll < DOB_YEAR_TYPO_RATE:
        return _year_typo(birth, rng).isoformat()
    roll -= DOB_YEAR_TYPO_RATE
    if roll < DOB_YEAR_ONLY_RATE:
        return f"{birth.year:04d}-01-01"
    roll -= DOB_YEAR_ONLY_RATE
    if roll < DOB_OTHER_RATE:
        return date.fromordinal(between(rng, OLDEST_BIRTH.toordinal(), YOUNGEST_BIRTH.toordinal())).isoformat()
    return birth.isoformat()


def _year_typo(birth: date, rng: random.Random) -> date:
    """Returns ``birth`` with one of the year's last two digits wrong, or the two swapped (1957 -> 1975)."""
    digits = list(f"{birth.year:04d}")
    if rng.random() < 0.3 and digits[2] != digits[3]:
        digits[2], digits[3] = digits[3], digits[2]
    else:
        position = 2 + int(rng.random() * 2)
        old = int(digits[position])
        digits[position] = str((old + pick(rng, (1, -1, 1, -1, 2, 5))) % 10)
    year = int("".join(digits))
    day = min(birth.day, 28) if birth.month == 2 else birth.day
    return date(year, birth.month, day)


def render_birth_place(person: Person, noise: Noise, system: str) -> str:
    """Returns the person's birth place as one record writes it: misspelt, spelt otherwise, or wrong."""
    culture = person.culture
    town = person.birth_place
    roll = noise.rng.random()
    if roll < PLACE_WRONG_RATE:
        other = person.pool.towns.draw(noise.rng)
        town = other if other != town else person.pool.towns.draw(noise.rng)
    written = register_spelling(culture, system)
    if PLACE_WRONG_RATE <= roll < PLACE_WRONG_RATE + PLACE_VARIANT_RATE:
        return place_variant(town, culture, written, noise)
    text = romanise(town, culture.script, written)
    if noise.chance(PLACE_TYPO_RATE):
        text = noise.typo(text)
    return text


def register_spelling(culture: Culture, system: str) -> str:
    """Returns how a record writes towns and jobs: in the original script if its names are,
    else in the registry's usual romanisation; Latin-script values as they are."""
    if culture.script == "latin" or system == ORIGINAL:
        return ORIGINAL
    return CANONICAL_SYSTEM[culture.script]


def other_romanisation(text: str, culture: Culture, written: str, noise: Noise) -> str:
    """Returns Cyrillic or Greek ``text`` in another script or system than ``written``."""
    systems = [system for system in (ORIGINAL, *ROMANISATIONS[culture.script]) if system != written]
    return romanise(text, culture.script, pick(noise.rng, systems))


def place_variant(town: str, culture: Culture, written: str, noise: Noise) -> str:
    """Returns another spelling of ``town``: another romanisation, no accents, St. for Saint and the like."""
    if culture.script != "latin":
        return other_romanisation(town, culture, written, noise)
    options = [fold_accents(town)] if fold_accents(town) != town else []
    options += [town.replace(long, short, 1) for long, short in PLACE_ABBREVIATIONS if long in town]
    if culture.language == "de" and town.translate(GERMAN_DIGRAPHS) != town:
        options.append(town.translate(GERMAN_DIGRAPHS))
    # A plain name (Margaretview, Patra) is still spelt the way it sounds now and then (Margaretwiew).
    return pick(noise.rng, options) if options else noise.respell(town)


def render_postcode(person: Person, noise: Noise) -> str:
    """Returns the current postcode, another address's postcode, or a mistyped or cut-short one."""
    code = person.postcodes[0]
    if noise.chance(POSTCODE_OTHER_RATE):
        code = pick(noise.rng, person.postcodes[1:])
    if noise.chance(POSTCODE_TYPO_RATE):
        code = postcode_typo(code, noise.rng)
    return code


def postcode_typo(code: str, rng: random.Random) -> str:
    """Returns ``code`` with a wrong character, two characters swapped, or its end cut off."""
    positions = [i for i, ch in enumerate(code) if ch.isalnum()]
    if len(positions) < 3:
        return code
    roll = rng.random()
    if roll < 0.25:
        return code[: -between(rng, 1, 2)].rstrip(" -")
    chars = list(code)
    i = pick(rng, positions[:-1])
    j = positions[positions.index(i) + 1]
    if roll < 0.5:
        chars[i], chars[j] = chars[j], chars[i]
    elif chars[i].isdigit():
        chars[i] = str((int(chars[i]) + between(rng, 1, 9)) % 10)
    else:
        chars[i] = pick(rng, "ABCDEFGHJKLMNPRSTUVWXYZ")
    return "".join(chars)


def render_occupation(person: Person, noise: Noise, system: str) -> str:
    """Returns the person's job, their other job, or a spelling variant of either."""
    culture = person.culture
    job = person.other_occupation if noise.chance(OCCUPATION_OTHER_RATE) else person.occupation
    written = register_spelling(culture, system)
    if noise.chance(OCCUPATION_VARIANT_RATE):
        return occupation_variant(job, culture, written, noise)
    return romanise(job, culture.script, written)


def occupation_variant(job: str, culture: Culture, written: str, noise: Noise) -> str:
    """Returns another spelling of ``job``: abbreviated, lower case, without accents or misspelt."""
    if culture.script != "latin":
        return other_romanisation(job, culture, written, noise)
    options = [job.replace(long, short, 1) for long, short in JOB_ABBREVIATIONS if long in job]
    options += [job.lower(), noise.typo(job)]
    if fold_accents(job) != job:
        options.append(fold_accents(job))
    return pick(noise.rng, [option for option in options if option != job] or [job])


def render_gender(gender: str, noise: Noise) -> str:
    """Returns m/f (or male/female, M/F), now and then the wrong one."""
    if noise.chance(GENDER_WRONG_RATE):
        gender = "m" if gender == "f" else "f"
    return GENDER_SPELLINGS.draw(noise.rng)[gender]


def render_record(person: Person, noise: Noise) -> dict[str, str]:
    """Returns one registry entry of ``person`` (without its id), each value with its own errors."""
    system = spelling_system(person.culture, noise)
    given, family = render_names(person, noise, system)
    values = {
        "GivenName": given,
        "FamilyName": family,
        "BirthDate": render_birth_date(person.birth, noise),
        "BirthPlace": render_birth_place(person, noise, system),
        "PostCode": render_postcode(person, noise),
        "Occupation": render_occupation(person, noise, system),
        "Gender": render_gender(person.gender, noise),
    }
    # Blanks are drawn last and per column, so a value's errors never depend on another's absence.
    for column, key in BLANKABLE.items():
        if noise.chance(MISSING[key]):
            values[column] = ""
    return values


BLANKABLE = {
    "GivenName": "given", "FamilyName": "family", "BirthDate": "birth_date", "BirthPlace": "birth_place",
    "PostCode": "postcode", "Occupation": "occupation", "Gender": "gender",
}


# --------------------------------------------------------------------------------------------
# Writing


@dataclass(slots=True)
class Row:
    """One registry row and who it truly is."""

    values: dict[str, str]
    person_id: str


def build_rows(persons: Sequence[Person], seed: int, emails: bool) -> list[Row]:
    """Returns every registry row, shuffled, with unique opaque ids."""
    noise = Noise(random.Random(f"{seed}:records"))
    rows = [Row(render_record(person, noise), person.person_id) for person in persons for _ in range(person.records)]
    if emails:
        email_rng = random.Random(f"{seed}:emails")
        assign_emails(persons, email_rng)
        email_noise = Noise(email_rng)
        owners = {person.person_id: person for person in persons}
        for row in rows:
            row.values[EMAIL_COLUMN] = record_email(owners[row.person_id], email_noise)
    ids = random.Random(f"{seed}:ids")
    ids.shuffle(rows)
    for row, number in zip(rows, ids.sample(range(10**7), len(rows)), strict=True):
        row.values["RecordId"] = f"R{number:07d}"
    return rows


def write_registry(rows: Sequence[Row], out: Path, emails: bool) -> None:
    """Writes registry.csv and truth/ground_truth.csv into ``out``; returns None."""
    out.mkdir(parents=True, exist_ok=True)
    columns = (*COLUMNS, EMAIL_COLUMN) if emails else COLUMNS
    write_csv(columns, [row.values for row in rows], out / REGISTRY_FILE, ",")
    truth = [
        {"source_system": SOURCE, "source_record_id": row.values["RecordId"], "person_id": row.person_id,
         "organisation_id": ""}
        for row in rows
    ]
    (out / TRUTH_FILE).parent.mkdir(parents=True, exist_ok=True)
    write_csv(TRUTH_COLUMNS, truth, out / TRUTH_FILE, ",")


def generate_registry(records: int, seed: int, out: Path, *, emails: bool = False) -> dict[str, int]:
    """Writes ``records`` registry rows and their ground truth into ``out``; returns rows written per source."""
    if not 1 <= records <= MAX_RECORDS_TOTAL:
        raise ValueError(f"records must be from 1 to {MAX_RECORDS_TOTAL:,}")
    persons = Population(records, seed).build()
    rows = build_rows(persons, seed, emails)
    write_registry(rows, Path(out), emails)
    return {SOURCE: len(rows)}


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Returns the parsed command line."""
    parser = argparse.ArgumentParser(
        prog="python -m cmdm_pipeline.sample.registry",
        description=(
            "Generate a dirty civil person registry (registry.csv: names, birth date and place, postcode, "
            "occupation, gender; no e-mail or phone) and truth/ground_truth.csv naming each row's true person. "
            "The same --records, --seed and --emails always give byte-identical files."
        ),
    )
    parser.add_argument("--records", type=int, default=10000, metavar="N",
                        help="number of registry rows (default: 10000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--out", type=Path, default=Path("data/registry"), metavar="DIR",
                        help="output folder, created if missing; files in it are overwritten (default: data/registry)")
    parser.add_argument("--emails", action="store_true",
                        help="add an Email column: a sign-up list of the same people")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, echo: Callable[[str], None] = print) -> int:
    """Runs the generator from the command line; returns the process exit code."""
    args = parse_args(argv)
    started = time.perf_counter()
    counts = generate_registry(args.records, args.seed, args.out, emails=args.emails)
    echo(f"{REGISTRY_FILE:<28} {counts[SOURCE]:>9,} rows  {args.out / REGISTRY_FILE}")
    echo(f"{TRUTH_FILE.as_posix():<28} {counts[SOURCE]:>9,} rows  {args.out / TRUTH_FILE}")
    echo(f"generated in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
