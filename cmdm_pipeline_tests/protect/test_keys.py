"""Key-encryption keys, the key file, the key store: wrong and missing keys, rotation, retirement, shredding."""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.keys import kek as keys_module
from cmdm_pipeline.protect.keys.crypto import decrypt_frame, encrypt_frame
from cmdm_pipeline.protect.keys.kek import (
    KEK_ENV,
    NO_KEK,
    DecryptionError,
    KeyFileError,
    KeyFileExistsError,
    KeyInUseError,
    KeyMissingError,
    KeyStoreBusyError,
    WrongKeyError,
    add_to_key_file,
    init_key_file,
    key_file_ids,
    key_file_path,
    load_keyring,
    new_key,
    read_key_file,
)
from cmdm_pipeline.protect.keys.keystore import KeyStore, keystore_path, master_owner
from cmdm_pipeline.protect.keys.rotation import retire, rotate
from cmdm_pipeline_tests.conftest import KEK_ENV_NAMES

pytestmark = pytest.mark.usefixtures("no_kek_in_environment")

GOLDEN = pl.DataFrame({"master_id": ["M1", "M2", "M3"], "email": ["ada@example.org", None, "alan@example.org"],
                       "last_name": ["Lovelace", "Hopper", "Turing"]})
PII = ["email", "last_name"]


@pytest.fixture
def project(make_project) -> ProjectConfig:  # type: ignore[no-untyped-def]
    return make_project()


def _env(key: bytes, **more: str) -> dict[str, str]:
    return {KEK_ENV: base64.b64encode(key).decode(), **more}


def _encrypted(store: KeyStore) -> pl.DataFrame:
    return encrypt_frame(GOLDEN, PII, "golden_customers", master_owner(), "master_id", store)


def _decrypted(store: KeyStore, frame: pl.DataFrame) -> pl.DataFrame:
    return decrypt_frame(frame, PII, "golden_customers", "master_id", store)


# --- the key file ------------------------------------------------------------------------------------


def test_init_creates_a_private_key_file_and_refuses_to_overwrite_it(project: ProjectConfig) -> None:
    path = key_file_path(project)
    assert path == project.warehouse_path.parent / "keys" / "dev.kek.json"
    kek_id = init_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_keyring(project).active_id == kek_id
    before = path.read_bytes()
    with pytest.raises(KeyFileExistsError, match="already exists; refusing to overwrite"):
        init_key_file(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(project: ProjectConfig, mode: int) -> None:
    path = key_file_path(project)
    init_key_file(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as caught:
        load_keyring(project)
    message = str(caught.value)
    assert str(path) in message and f"mode {mode:04o}" in message and "refusing to use it" in message
    assert "chmod 600" in message


def test_a_malformed_key_file_is_named_without_quoting_it(project: ProjectConfig) -> None:
    path = key_file_path(project)
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 1, "active": "a", "keys": [{"id": "a", "key": "c2VjcmV0"}]', encoding="utf-8")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError) as caught:
        load_keyring(project)
    assert str(path) in str(caught.value) and "c2VjcmV0" not in str(caught.value)


# --- where the key comes from ------------------------------------------------------------------------


def test_no_key_is_a_clear_error_and_creates_nothing(project: ProjectConfig) -> None:
    with pytest.raises(KeyMissingError, match=f"^{NO_KEK}"):
        load_keyring(project)
    assert not key_file_path(project).exists()


def test_the_first_run_creates_a_dev_key_loudly(project: ProjectConfig, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cmdm_pipeline.protect.keys.kek"):
        keyring = load_keyring(project, create_dev_key=True)
    path = key_file_path(project)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and keyring.key_file == path
    warning = caplog.records[-1]
    assert warning.levelno == logging.WARNING and "DEVELOPMENT" in warning.getMessage()
    assert str(path) in warning.getMessage() and keyring.active_id in warning.getMessage()


def test_no_dev_key_is_created_where_keys_were_configured(make_project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = make_project(protection={"key_file": str(tmp_path / "elsewhere" / "prod.kek.json")})
    with pytest.raises(KeyMissingError, match=NO_KEK):
        load_keyring(config, create_dev_key=True)
    assert not (tmp_path / "elsewhere").exists()
    with pytest.raises(KeyMissingError, match="CMDM_KEK is set but empty"):
        load_keyring(make_project(), create_dev_key=True, environ={KEK_ENV: ""})
    assert not key_file_path(config).exists() and not (tmp_path / "warehouse" / "keys").exists()


def test_the_environment_key_wins_and_its_id_is_a_stable_fingerprint(project: ProjectConfig) -> None:
    init_key_file(key_file_path(project))
    key = new_key()
    first, second = load_keyring(project, environ=_env(key)), load_keyring(project, environ=_env(key))
    assert first.key_file is None and first.active_id == second.active_id and first.active_id.startswith("env-")
    assert load_keyring(project, environ=_env(new_key())).active_id != first.active_id
    assert load_keyring(project, environ=_env(key, CMDM_KEK_ID="prod-2026")).active_id == "prod-2026"


@pytest.mark.parametrize(
    ("value", "message"),
    [("not base64!", "CMDM_KEK is not base64"), (base64.b64encode(b"short").decode(), "must decode to 32 bytes, got 5")],
)
def test_a_malformed_environment_key_is_described_not_echoed(project: ProjectConfig, value: str, message: str) -> None:
    with pytest.raises(KeyMissingError) as caught:
        load_keyring(project, environ={KEK_ENV: value})
    assert message in str(caught.value) and value not in str(caught.value)


# --- wrong keys, and nothing written ----------------------------------------------------------------


def test_a_wrong_key_with_the_right_id_fails_before_anything_is_written(project: ProjectConfig) -> None:
    environ = _env(new_key(), CMDM_KEK_ID="prod")
    _encrypted(KeyStore.for_config(project, load_keyring(project, environ=environ)))
    path = keystore_path(project, environ)
    before = path.read_bytes()
    wrong_key = new_key()
    with pytest.raises(WrongKeyError) as caught:
        KeyStore.for_config(project, load_keyring(project, environ=_env(wrong_key, CMDM_KEK_ID="prod")))
    message = str(caught.value)
    assert message.startswith("the key-encryption key prod cannot unwrap data key ") and "wrong key?" in message
    assert base64.b64encode(wrong_key).decode() not in message
    assert path.read_bytes() == before


def test_a_different_key_is_missing_the_one_that_wraps_the_data_keys(project: ProjectConfig) -> None:
    _encrypted(KeyStore.for_config(project, load_keyring(project, environ=_env(new_key()))))
    with pytest.raises(KeyMissingError, match=r"4 data keys .* are wrapped by key-encryption key env-\w+, which is not loaded"):
        KeyStore.for_config(project, load_keyring(project, environ=_env(new_key())))


def test_no_key_material_in_errors_logs_or_reprs(project: ProjectConfig, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        keyring = load_keyring(project, create_dev_key=True)
        store = KeyStore.for_config(project, keyring)
        sealed = _encrypted(store)
        swapped = sealed.with_columns(pl.col("email").reverse())
        with pytest.raises(DecryptionError) as caught:
            _decrypted(store, swapped)
    material = [entry.split('"key": "')[1].split('"')[0] for entry in key_file_path(project).read_text().split("\n")
                if '"key": "' in entry]
    texts = [str(caught.value), caplog.text, repr(keyring), repr(store.keyring)]
    assert material and not [m for m in material for text in texts if m in text]
    assert "ada@example.org" not in str(caught.value) and "alan@example.org" not in str(caught.value)


# --- rotation and retirement --------------------------------------------------------------------------


def test_rotation_rewraps_every_data_key_and_keeps_every_value(project: ProjectConfig) -> None:
    old = load_keyring(project, create_dev_key=True)
    store = KeyStore.for_config(project, old)
    sealed = _encrypted(store)
    result = rotate(project)
    assert result.rewrapped == {old.active_id: 4}  # one per master, and the blind-index key
    assert result.added_to == key_file_path(project)
    assert key_file_ids(key_file_path(project)) == sorted([old.active_id, result.active_id])
    new = load_keyring(project)
    assert new.active_id == result.active_id
    after = KeyStore.for_config(project, new)
    assert after.status().live_by_kek == {result.active_id: 4}
    assert _decrypted(after, sealed).equals(GOLDEN)  # the data was not touched, only the wrapping


def test_retire_refuses_an_active_or_used_key_then_removes_it(project: ProjectConfig) -> None:
    first = load_keyring(project, create_dev_key=True).active_id
    _encrypted(KeyStore.for_config(project, load_keyring(project)))
    add_to_key_file(key_file_path(project), "kek-second", new_key())  # a new active key, nothing re-wrapped yet
    with pytest.raises(KeyInUseError, match=f"{first} still wraps 4 data keys: run `cmdm keys rotate` first"):
        retire(project, first)
    with pytest.raises(KeyInUseError, match="kek-second is the active one"):
        retire(project, "kek-second")
    rotate(project)
    active = load_keyring(project).active_id
    for kek_id in (first, "kek-second"):
        assert retire(project, kek_id).removed_from == key_file_path(project)
    assert key_file_ids(key_file_path(project)) == [active]
    assert KeyStore.for_config(project, None).status().keks[0][2] is not None  # marked retired in the store


def test_a_failed_rotation_leaves_the_old_wrapping(project: ProjectConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    old = load_keyring(project, create_dev_key=True)
    sealed = _encrypted(KeyStore.for_config(project, old))
    store_before, file_before = keystore_path(project).read_bytes(), key_file_path(project).read_bytes()

    def disk_full(*_: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr("cmdm_pipeline.protect.keys.rotation.add_to_key_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        rotate(project)
    assert keystore_path(project).read_bytes() == store_before
    assert key_file_path(project).read_bytes() == file_before
    assert _decrypted(KeyStore.for_config(project, load_keyring(project)), sealed).equals(GOLDEN)


def test_rotation_in_environment_mode_uses_the_previous_key(project: ProjectConfig) -> None:
    old_key, new_key_ = new_key(), new_key()
    old = load_keyring(project, environ=_env(old_key))
    sealed = _encrypted(KeyStore.for_config(project, old))
    both = _env(new_key_, CMDM_KEK_PREVIOUS=base64.b64encode(old_key).decode())
    result = rotate(project, environ=both)
    assert result.added_to is None and result.rewrapped == {old.active_id: 4}
    assert rotate(project, environ=both).rewrapped == {}  # nothing left under the old key
    assert retire(project, old.active_id, environ=both).removed_from is None
    alone = load_keyring(project, environ=_env(new_key_))
    assert _decrypted(KeyStore.for_config(project, alone), sealed).equals(GOLDEN)


def test_a_key_retired_elsewhere_wraps_no_new_data_key(project: ProjectConfig) -> None:
    old_id = load_keyring(project, create_dev_key=True).active_id
    _encrypted(KeyStore.for_config(project, load_keyring(project)))
    rotate(project)
    # A process that loaded its keys before the rotation still has the old key active.
    stale = read_key_file(key_file_path(project)).with_kek(old_id, new_key(), active=True)
    stale_store = KeyStore(keystore_path(project), stale)
    retire(project, old_id)
    with pytest.raises(KeyMissingError, match=f"{old_id} was retired after it was loaded: start again"):
        stale_store.keys_for_owners(pl.Series(["master/M9"]))
    assert old_id not in KeyStore.for_config(project, None).status().live_by_kek


# --- crypto-shredding and the store itself ------------------------------------------------------------


def test_destroy_shreds_one_owner_and_drops_the_key_bytes(project: ProjectConfig) -> None:
    store = KeyStore.for_config(project, load_keyring(project, create_dev_key=True))
    sealed = _encrypted(store)
    with duckdb.connect(str(store.path), read_only=True) as con:
        wrapped = con.execute("SELECT wrapped_key FROM data_keys WHERE owner = 'master/M1'").fetchall()[0][0]
    assert wrapped in store.path.read_bytes()
    assert store.destroy(["master/M1"]) == 1
    assert wrapped not in store.path.read_bytes()  # the file was rebuilt, not just updated
    with pytest.raises(DecryptionError, match=r"golden_customers.email of record M1: its data key \w+ was destroyed"):
        _decrypted(store, sealed)
    shredded = decrypt_frame(sealed, PII, "golden_customers", "master_id", store, destroyed="null")
    assert shredded.row(0) == ("M1", None, None) and shredded.slice(1).equals(GOLDEN.slice(1))
    assert store.status().destroyed == 1


def test_a_busy_key_store_is_reported(project: ProjectConfig) -> None:
    keyring = load_keyring(project, create_dev_key=True)
    holder = KeyStore.for_config(project, keyring)
    with holder._locked():
        with pytest.raises(KeyStoreBusyError, match="in use by another process"):
            KeyStore.for_config(project, keyring, lock_timeout=0.1).keys_for_owners(pl.Series(["master/M1"]))


def test_the_key_store_file_is_private(project: ProjectConfig) -> None:
    store = KeyStore.for_config(project, load_keyring(project, create_dev_key=True))
    _encrypted(store)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    store.compact()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_keys_module_documents_its_environment_variables() -> None:
    assert all(name in (keys_module.__doc__ or "") for name in KEK_ENV_NAMES)


def test_keys_of_known_and_new_owners_come_back_in_row_order(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "dev.kek.json"
    init_key_file(key_file)
    store = KeyStore(tmp_path / "keys" / "keystore.duckdb", read_key_file(key_file))
    first = store.keys_for_owners(pl.Series(["a", "b"]))
    known = dict(zip(["a", "b"], first.keys, strict=True))
    mixed = store.keys_for_owners(pl.Series(["c", "a", "c", "d", "b"]))
    by_row = [mixed.keys[i] for i in mixed.index.to_list()]
    assert by_row[1] == known["a"] and by_row[4] == known["b"]  # found again, unwrapped
    assert by_row[0] == by_row[2] and len({by_row[0], by_row[3], *known.values()}) == 4  # c and d new, distinct
    again = store.keys_for_owners(pl.Series(["c", "a", "c", "d", "b"]))
    assert [again.keys[i] for i in again.index.to_list()] == by_row  # all found: the same keys, same order
