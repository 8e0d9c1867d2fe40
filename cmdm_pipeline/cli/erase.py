"""``cmdm erase``: record an erasure request for the next run, and show ``erasure_log``. ``cmdm_pipeline.cli`` wires it.

The request is stored as blind indexes and ids (docs/concepts/erasure.md): the e-mail or phone typed on the
command line is never written anywhere, and nothing here prints it back.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

EXIT_CODES = (
    "exit codes:\n  0    the request is recorded (and/or the log printed)\n"
    "  1    nothing to show: no warehouse or no erasure_log yet, or the warehouse is in use\n"
    "  2    wrong arguments, an invalid config, an unknown source system, a request id already used,\n"
    "       or no (or a wrong) key-encryption key"
)


def _record(text: str) -> tuple[str, str]:
    system, sep, record = text.partition(":")
    if not sep or not system.strip() or not record.strip():
        raise argparse.ArgumentTypeError(f"expected SYSTEM:ID (e.g. crm:003S55JDW50HTZ2), got {text!r}")
    return system.strip().lower(), record.strip()


def add_erase_parser(
    commands: argparse._SubParsersAction,
    formatter: type[argparse.HelpFormatter],
    config_help: str,
    wrap: Callable[[str], str],
) -> None:
    erase = commands.add_parser(
        "erase",
        help="record a right-to-erasure request for the next run, or show the erasure log",
        description=wrap(
            "Record an erasure request: the next run finds the subject (by source record, master id, e-mail or "
            "phone, in that order), deletes their rows from every table (history included), destroys their data "
            "keys, rebuilds the warehouse file, tombstones their records so sources that still hold them cannot "
            "bring them back, and lists in erasure_notifications the source record ids each system must delete. "
            "The e-mail or phone is stored only as a blind index (keyed HMAC), never as typed. Without a subject, "
            "--log prints erasure_log (request id, status, rows removed, keys destroyed: no personal data)."
        ),
        epilog="examples:\n  cmdm erase --email jane@example.com --request-id TICKET-42\n"
        "  cmdm erase --record crm:003S55JDW50HTZ2\n  cmdm erase --log\n\n" + EXIT_CODES,
        formatter_class=formatter,
    )
    erase.add_argument("--config", metavar="PATH", help=config_help)
    subject = erase.add_argument_group("subject (at least one, unless --log)")
    subject.add_argument("--email", metavar="ADDRESS", help="the subject's e-mail address")
    subject.add_argument("--phone", metavar="NUMBER", help="the subject's phone number (E.164, or national with --country)")
    subject.add_argument("--master-id", metavar="ID", help="the subject's master id (customer_xref.master_id)")
    subject.add_argument("--record", metavar="SYSTEM:ID", type=_record,
                         help="one of the subject's source records, e.g. crm:003S55JDW50HTZ2")
    erase.add_argument("--country", metavar="CC", help="ISO alpha-2 country to read a --phone without + (e.g. DE)")
    erase.add_argument("--request-id", metavar="ID",
                       help="your reference for the request (a ticket number); default: cli-<time>-<random>")
    erase.add_argument("--log", action="store_true", help="print erasure_log (after recording, if a subject is given)")


def erase_command(args: argparse.Namespace) -> int:
    from cmdm_pipeline.config import ConfigError, load_config
    from cmdm_pipeline.errors import ProtectionError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    given = any(v is not None for v in (args.email, args.phone, args.master_id, args.record))
    if not given and not args.log:
        print("cmdm erase: name the subject (--email, --phone, --master-id or --record SYSTEM:ID) or use --log",
              file=sys.stderr)
        return EXIT_USAGE
    if given:
        try:
            request_id = _record_request(config, args)
        except (ValueError, ProtectionError) as exc:
            print(f"cmdm erase: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"recorded erasure request {request_id}; the next `cmdm run` processes it")
    return _print_log(config) if args.log else EXIT_OK


def _record_request(config, args: argparse.Namespace) -> str:
    import polars as pl

    from cmdm_pipeline.protect.erasure.apply import open_keys
    from cmdm_pipeline.protect.erasure.requests import (
        ErasureRequestError,
        record_request,
    )
    from cmdm_pipeline.protect.keys.blind_index import blind_index
    from cmdm_pipeline.stages.fields import clean_text, email, phone

    email_index = phone_index = None
    if args.email is not None or args.phone is not None:
        keys = open_keys(config)
        if args.email is not None:
            checked = email(clean_text(pl.Series([args.email])))
            if checked.value[0] is None:
                raise ErasureRequestError("--email is not a valid e-mail address")
            email_index = blind_index(checked.value, "email", keys)[0]
        if args.phone is not None:
            checked = phone(clean_text(pl.Series([args.phone])), country=pl.Series([args.country], dtype=pl.String))
            if checked.value[0] is None:
                raise ErasureRequestError("--phone is not a phone number (give + and the country code, or --country)")
            phone_index = blind_index(checked.value, "phone", keys)[0]
    return record_request(config, request_id=args.request_id, email_index=email_index, phone_index=phone_index,
                          master_id=args.master_id, record=args.record)


def _print_log(config) -> int:
    import duckdb

    from cmdm_pipeline.protect.erasure.subjects import LOG
    from cmdm_pipeline.sql import statement
    from cmdm_pipeline.warehouse import Warehouse

    store = Warehouse(config.warehouse_path)
    try:
        if LOG not in store.tables():
            print("cmdm erase: no erasure_log yet (run `cmdm run` first)", file=sys.stderr)
            return EXIT_FAILED
        log = store.query(statement("erasure/select_log", table=LOG))
    except duckdb.IOException:
        print(f"cmdm erase: the warehouse {config.warehouse_path} is in use by a running pipeline; try again later",
              file=sys.stderr)
        return EXIT_FAILED
    header = f"{'request':<24}{'status':<11}{'processed (UTC)':<21}{'masters':>8}{'records':>8}{'rows':>7}{'keys':>6}"
    print(header)
    for row in log.iter_rows(named=True):
        processed = row["processed_at"].strftime("%Y-%m-%d %H:%M:%S") if row["processed_at"] else ""
        print(f"{row['request_id'][:23]:<24}{row['status']:<11}{processed:<21}{row['masters_erased']:>8}"
              f"{row['records_erased']:>8}{row['rows']:>7}{row['keys_destroyed']:>6}")
    print(f"{log.height} request(s); rows removed per table: SELECT request_id, rows_removed FROM erasure_log")  # noqa: S608 - identifiers are constants or quoted, values bound
    return EXIT_OK
