"""Text noise: how people and old systems damage values (typos, case, spaces, accents, nicknames)."""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from cmdm_pipeline.sample.common import pick

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
KEYBOARD_NEIGHBOURS = {
    "a": "qwsz", "b": "vghn", "c": "xdfv", "d": "serfcx", "e": "wsdr", "f": "drtgvc", "g": "ftyhbv", "h": "gyujnb",
    "i": "ujko", "j": "huikmn", "k": "jiolm", "l": "kop", "m": "njk", "n": "bhjm", "o": "iklp", "p": "ol",
    "q": "wa", "r": "edft", "s": "awedxz", "t": "rfgy", "u": "yhji", "v": "cfgb", "w": "qase", "x": "zsdc",
    "y": "tghu", "z": "asx",
}
_FOLD_EXTRA = str.maketrans({
    "ß": "ss", "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "đ": "d", "Đ": "D", "œ": "oe", "Œ": "OE",
})


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
