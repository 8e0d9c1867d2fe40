"""Valid, unique phone numbers (from the libphonenumber examples) and checksum-valid VAT numbers."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from stdnum import luhn
from stdnum.gb import vat as gb_vat
from stdnum.ie import vat as ie_vat

from cmdm_pipeline.sample.common import COUNTRIES, between, pick

# --------------------------------------------------------------------------------------------
# Phones


@dataclass(frozen=True, slots=True)
class Phone:
    """One phone number in the three layouts sources write."""

    region: str
    e164: str
    international: str
    national: str


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
        if example is None:
            raise RuntimeError(f"phonenumbers has no {kind} example number for {region}")
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
        if example.country_code is None:  # an example number always has one; phonenumbers types it optional
            return None
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
