"""Key-encryption keys (KEKs): where they come from, and the errors every key operation raises.

A KEK only wraps data keys (see :mod:`cmdm_pipeline.protect.keys.keystore`); it never touches data.
It comes from one of two places, checked in this order:

- **the environment** (production): ``CMDM_KEK`` holds 32 random bytes in base64 (``openssl rand
  -base64 32``), ``CMDM_KEK_ID`` optionally names it (default ``env-`` + a fingerprint of the key, so
  the same key always gets the same id and a different key a different one). During a rotation
  ``CMDM_KEK_PREVIOUS`` (+ ``CMDM_KEK_PREVIOUS_ID``) holds the old key, so both work side by side;
- **a key file** (``protection.key_file``, default ``<warehouse dir>/keys/dev.kek.json``, under the
  git-ignored warehouse folder): JSON holding one or more KEKs with ids and which one is active.
  It must be mode 0600 (its folder is created 0700); a file readable by group or others is refused.

``cmdm keys init`` creates the key file; :func:`load_keyring` creates it on the first run only when
nothing was configured (no ``CMDM_KEK``, no explicit ``protection.key_file``), with a loud WARNING:
a key file next to the warehouse is for development, never production.

Key material never appears in messages, logs or reprs: errors name key ids and paths only.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cmdm_pipeline.errors import ProtectionError
from cmdm_pipeline.protect.keys.aes_worker import opens, random_nonces

if TYPE_CHECKING:
    from cmdm_pipeline.config import ProjectConfig, ProtectionConfig

log = logging.getLogger(__name__)

KEK_ENV, KEK_ID_ENV = "CMDM_KEK", "CMDM_KEK_ID"
PREVIOUS_KEK_ENV, PREVIOUS_KEK_ID_ENV = "CMDM_KEK_PREVIOUS", "CMDM_KEK_PREVIOUS_ID"
KEY_BYTES = 32  # AES-256
KEY_FILE_FORMAT = 1
DEFAULT_KEY_FILE = Path("keys/dev.kek.json")  # relative to the warehouse folder
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DEV_WARNING = (
    "DEVELOPMENT key file: anyone who can read it can decrypt the warehouse, and losing it loses the "
    "encrypted data. Never use it in production: set CMDM_KEK from a secret manager instead."
)
NO_KEK = "no key-encryption key: set CMDM_KEK or run `cmdm keys init`"


class KeyMissingError(ProtectionError):
    """No key-encryption key, or not the one a data key is wrapped by."""


class WrongKeyError(ProtectionError):
    """A key-encryption key with the right id that cannot unwrap: wrong material."""


class KeyFileError(ProtectionError):
    """The key file is unsafe (permissions), unreadable or malformed, or would be overwritten."""


class KeyFileExistsError(KeyFileError):
    """``cmdm keys init`` found a key file already there and left it alone."""


class KeyInUseError(ProtectionError):
    """A key-encryption key cannot be retired: it is active or still wraps data keys."""


class KeyStoreBusyError(ProtectionError):
    """Another process (a pipeline run, another ``cmdm keys``) holds the key store."""


class KeyStoreMissingError(KeyMissingError):
    """The warehouse was paired with a key store that is not there: refused, nothing created."""


class KeyStoreMismatchError(KeyMissingError):
    """The key store found is not the one the warehouse was paired with."""


class KeyStoreExistsError(ProtectionError):
    """``cmdm keys new-store`` found a key store and left it alone."""


class DecryptionError(ProtectionError):
    """A ciphertext does not decrypt where it is: moved, tampered with, or its data key is destroyed."""


@dataclass(frozen=True)
class Keyring:
    """The loaded KEKs, by id, one of them active (new data keys are wrapped by it).

    Holds AES-GCM objects, not key bytes, so nothing here can print key material.
    """

    active_id: str
    source: str  # where the keys came from, for messages: "environment (CMDM_KEK)" or "key file <path>"
    key_file: Path | None  # the key file in file mode, else None
    _keks: Mapping[str, AESGCM] = field(repr=False)

    @property
    def ids(self) -> list[str]:
        return sorted(self._keks)

    def has(self, kek_id: str) -> bool:
        return kek_id in self._keks

    def wrap(self, data_key_ids: pl.Series, owners: pl.Series, keys: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        """Wrap data keys under the active KEK: (nonces, wrapped keys). AAD binds each to its id and owner."""
        nonces = random_nonces(len(keys))
        wrapped = list(map(self._keks[self.active_id].encrypt, nonces, keys, _wrap_aads(data_key_ids, owners)))
        return nonces, wrapped

    def unwrap(
        self, kek_id: str, data_key_ids: pl.Series, owners: pl.Series, nonces: list[bytes], wrapped: list[bytes]
    ) -> list[bytes]:
        """Unwrap data keys wrapped by ``kek_id``; a wrong key or a moved wrapping raises :class:`WrongKeyError`."""
        aead = self._keks.get(kek_id)
        if aead is None:
            raise KeyMissingError(
                f"data key {data_key_ids[0].hex()} is wrapped by key-encryption key {kek_id}, which is not "
                f"loaded from the {self.source}: wrong key? {_supply_hint(self)}"
            )
        aads = _wrap_aads(data_key_ids, owners)
        try:
            return list(map(aead.decrypt, nonces, wrapped, aads))
        except InvalidTag:
            bad = next(
                key_id for nonce, blob, key_id, aad in zip(nonces, wrapped, data_key_ids, aads, strict=True)
                if not opens(aead, nonce, blob, aad)
            )
            raise WrongKeyError(
                f"the key-encryption key {kek_id} cannot unwrap data key {bad.hex()}: wrong key? "
                f"(keys from the {self.source})"
            ) from None

    def with_kek(self, kek_id: str, key: bytes, active: bool) -> Keyring:
        """This keyring plus one KEK (made active or not)."""
        keks = {**self._keks, kek_id: AESGCM(key)}
        return Keyring(kek_id if active else self.active_id, self.source, self.key_file, keks)


def _wrap_aads(data_key_ids: pl.Series, owners: pl.Series) -> list[bytes]:
    """``cmdm-data-key|<key id hex>|<owner>``: a wrapped key copied to another id or owner does not unwrap."""
    aad = pl.concat_str(pl.lit("cmdm-data-key|"), pl.lit(data_key_ids).bin.encode("hex"), pl.lit("|"), pl.lit(owners))
    return pl.select(aad.cast(pl.Binary)).to_series().to_list()


def _supply_hint(keyring: Keyring) -> str:
    if keyring.key_file is None:
        return f"Set {KEK_ENV} to the right key, or during a rotation {PREVIOUS_KEK_ENV} to the old one."
    return f"Use the key file that holds it (protection.key_file, or {KEK_ENV})."


# --- where the keys come from ---------------------------------------------------------------------


def key_file_path(config: ProjectConfig) -> Path:
    """The configured key file, else ``<warehouse dir>/keys/dev.kek.json``."""
    configured = _protection(config).key_file
    return config.resolve(configured) if configured else config.warehouse_path.parent / DEFAULT_KEY_FILE


def key_file_is_default(config: ProjectConfig) -> bool:
    return _protection(config).key_file is None


def _protection(config: ProjectConfig) -> ProtectionConfig:
    return config.protection


def env_mode(environ: Mapping[str, str] | None = None) -> bool:
    return KEK_ENV in (os.environ if environ is None else environ)


def development_mode(config: ProjectConfig, environ: Mapping[str, str] | None = None) -> bool:
    """Keys from the embedded development key file: no ``CMDM_KEK``, no ``protection.key_file``."""
    return not env_mode(environ) and key_file_is_default(config)


def load_keyring(
    config: ProjectConfig, create_dev_key: bool = False, environ: Mapping[str, str] | None = None
) -> Keyring:
    """The KEKs for this project: ``CMDM_KEK`` (+ ``CMDM_KEK_PREVIOUS``) if set, else the key file.

    ``create_dev_key`` (the pipeline's first run) creates the key file with a loud WARNING when it is
    missing, but only on the embedded default: never when ``CMDM_KEK`` is set or ``protection.key_file``
    is configured, where a missing key is an error. Raises :class:`KeyMissingError`, :class:`KeyFileError`.
    """
    environ = os.environ if environ is None else environ
    if KEK_ENV in environ:
        return _keyring_from_env(environ)
    path = key_file_path(config)
    if not path.exists():
        if not (create_dev_key and key_file_is_default(config)):
            raise KeyMissingError(f"{NO_KEK} (no key file at {path})")
        kek_id = init_key_file(path)
        log.warning(
            "!!! created a DEVELOPMENT key-encryption key %s in %s (mode 0600). It protects every encrypted "
            "value: back it up apart from the warehouse, and never use a key file next to the warehouse in "
            "production: set %s from a secret manager. !!!", kek_id, path, KEK_ENV,
        )
    return read_key_file(path)


def _keyring_from_env(environ: Mapping[str, str]) -> Keyring:
    keks: dict[str, AESGCM] = {}
    active = _env_key(environ, KEK_ENV, KEK_ID_ENV, keks)
    if PREVIOUS_KEK_ENV in environ:
        _env_key(environ, PREVIOUS_KEK_ENV, PREVIOUS_KEK_ID_ENV, keks)
    return Keyring(active, f"environment ({KEK_ENV})", None, keks)


def _env_key(environ: Mapping[str, str], name: str, id_name: str, keks: dict[str, AESGCM]) -> str:
    key = _decode_key(environ[name], name)
    kek_id = environ.get(id_name) or fingerprint_id(key)
    _check_id(kek_id, id_name)
    if kek_id in keks:
        raise KeyMissingError(f"{KEK_ID_ENV} and {PREVIOUS_KEK_ID_ENV} name the same id {kek_id}: give each key its own")
    keks[kek_id] = AESGCM(key)
    return kek_id


def _decode_key(text: str, where: str) -> bytes:
    # The message says what is wrong with the value, never the value.
    if not text.strip():
        raise KeyMissingError(f"{where} is set but empty: {NO_KEK}")
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyMissingError(f"{where} is not base64 (make one with `openssl rand -base64 32`)") from None
    if len(key) != KEY_BYTES:
        raise KeyMissingError(f"{where} must decode to {KEY_BYTES} bytes, got {len(key)} (`openssl rand -base64 32`)")
    return key


def _check_id(kek_id: str, where: str) -> None:
    if not _KEY_ID.match(kek_id):
        raise KeyMissingError(f"{where}: a key id is 1-64 letters, digits, '.', '_' or '-'")


def fingerprint_id(key: bytes) -> str:
    """A stable id for a key from the environment; a keyed digest, so it reveals nothing of the key."""
    return "env-" + hmac.new(key, b"cmdm key-encryption key id", hashlib.sha256).hexdigest()[:12]


def new_kek_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"kek-{now:%Y%m%d}-{secrets.token_hex(3)}"


# --- the key file -----------------------------------------------------------------------------------


def init_key_file(path: Path) -> str:
    """Create a key file holding one new active KEK (mode 0600, folder 0700); refuse to overwrite one."""
    kek_id = new_kek_id()
    document = _document(kek_id, {kek_id: (secrets.token_bytes(KEY_BYTES), _now())})
    private_folder(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileExistsError(
            f"{path} already exists; refusing to overwrite a key file (it may be the only copy of the keys)"
        ) from None
    _write_fd(fd, document)
    return kek_id


def read_key_file(path: Path) -> Keyring:
    """The KEKs of a key file; refuses a file group or others can read, or one that is not a cmdm key file."""
    active, keys = _read_keys(path)
    return Keyring(active, f"key file {path}", path, {kek_id: AESGCM(key) for kek_id, (key, _) in keys.items()})


def add_to_key_file(path: Path, kek_id: str, key: bytes) -> None:
    """Add a KEK to the key file and make it active (atomic replace: the old file stays whole on failure)."""
    active, keys = _read_keys(path)
    if kek_id in keys:
        raise KeyFileError(f"{path} already holds a key-encryption key {kek_id}")
    _replace_key_file(path, _document(kek_id, {**keys, kek_id: (key, _now())}))


def remove_from_key_file(path: Path, kek_id: str) -> None:
    """Remove a KEK that is not active from the key file (atomic replace)."""
    active, keys = _read_keys(path)
    if kek_id == active:
        raise KeyInUseError(f"key-encryption key {kek_id} is the active one in {path}; rotate first")
    if kek_id not in keys:
        raise KeyMissingError(f"{path} holds no key-encryption key {kek_id}")
    _replace_key_file(path, _document(active, {k: v for k, v in keys.items() if k != kek_id}))


def key_file_ids(path: Path) -> list[str]:
    return sorted(_read_keys(path)[1])


def _read_keys(path: Path) -> tuple[str, dict[str, tuple[bytes, str]]]:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyMissingError(f"{NO_KEK} (no key file at {path})") from None
    if os.name == "posix" and mode & 0o077:
        raise KeyFileError(
            f"{path} is readable or writable by group or others (mode {mode & 0o777:04o}); refusing to use it. "
            f"Run `chmod 600 {path}` if no one else has read it, else treat the keys as compromised and rotate."
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        active = document["active"]
        keys = {
            entry["id"]: (_decode_file_key(entry["key"], path, entry["id"]), entry.get("created_at", ""))
            for entry in document["keys"]
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Not the exception text: json errors can quote the file's content, i.e. key material.
        raise KeyFileError(f"{path} is not a cmdm key file ({type(exc).__name__})") from None
    if document.get("format") != KEY_FILE_FORMAT or active not in keys:
        raise KeyFileError(f"{path} is not a cmdm key file (format {KEY_FILE_FORMAT} with an active key)")
    for kek_id in keys:
        _check_id(kek_id, f"{path}: key id")
    return active, keys


def _decode_file_key(text: str, path: Path, kek_id: str) -> bytes:
    try:
        return _decode_key(text, f"{path}: key {kek_id}")
    except KeyMissingError as exc:
        raise KeyFileError(str(exc)) from None


def _document(active: str, keys: dict[str, tuple[bytes, str]]) -> dict[str, Any]:
    return {
        "warning": _DEV_WARNING,
        "format": KEY_FILE_FORMAT,
        "active": active,
        "keys": [
            {"id": kek_id, "created_at": created, "key": base64.b64encode(key).decode("ascii")}
            for kek_id, (key, created) in keys.items()
        ],
    }


def _replace_key_file(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _write_fd(fd, document)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_fd(fd: int, document: dict[str, Any]) -> None:
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def private_folder(folder: Path) -> None:
    """Create the folder 0700 (the umask cannot widen it); an existing folder is left as it is."""
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
        os.chmod(folder, 0o700)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)

