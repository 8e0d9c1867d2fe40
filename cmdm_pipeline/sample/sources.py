"""The five source systems (CRM, ERP, web shop, POS/loyalty, NPS survey): their columns, how each
spells and damages the true values, and their record ids."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from stdnum import luhn

from cmdm_pipeline.sample.common import COUNTRIES, REFERENCE_DATE, Weighted, between, pick, random_date
from cmdm_pipeline.sample.identifiers import Phone
from cmdm_pipeline.sample.noise import NICKNAMES, Dirt, Profile, fold_accents
from cmdm_pipeline.sample.world import Address, Organisation, Person, World, strip_company_suffix

SOURCE_FILES: dict[str, str] = {
    "crm": "crm_contacts.csv",
    "erp": "erp_customers.csv",
    "shop": "shop_customers.jsonl",
    "pos": "pos_loyalty.csv",
    "survey": "survey_nps.csv",
}

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
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
NPS_SCORES = Weighted(range(11), (2, 1, 1, 2, 2, 4, 6, 10, 18, 24, 30))
STREET_ABBREVIATIONS = (
    (" Street", " St"), (" Road", " Rd"), (" Avenue", " Ave"), (" Lane", " Ln"), (" Drive", " Dr"),
    ("straße", "str."), ("Straße", "Str."), ("rue ", "r. "), ("Via ", "V. "), ("Calle ", "C/ "), ("ulica ", "ul. "),
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


@dataclass(slots=True)
class Row:
    """One source row and who it truly is."""

    values: dict[str, Any]
    person_id: str
    organisation_id: str


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
