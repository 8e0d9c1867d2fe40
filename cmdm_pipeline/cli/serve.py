"""``cmdm serve``: the steward workbench and the resolve API (``cmdm_pipeline.web``), served by uvicorn."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_CODES = (
    "exit codes:\n  0    stopped normally, or a hash / token was printed\n"
    "  1    nothing to serve yet (no run has published a snapshot), or the server could not start (port in use...)\n"
    "  2    wrong arguments, an invalid config, or no (or a wrong) key-encryption key"
)


def add_serve_parser(
    commands: argparse._SubParsersAction,
    formatter: type[argparse.HelpFormatter],
    config_help: str,
    wrap: Callable[[str], str],
) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the steward workbench (review queue, masters) and the resolve API over HTTP",
        description=wrap(
            "Serve the steward workbench and the resolve API from the snapshot the last run published "
            "(<warehouse folder>/web/; reloaded when a run publishes a new one). Never opens the warehouse. "
            "Decisions go to the decision store (web.decision_store), which the next run reads. Users, roles "
            "and lenses are in cmdm.yaml under web:. Bind to 127.0.0.1 and put a TLS reverse proxy in front "
            "for anything else (docs/operations/workbench.md)."
        ),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    serve.add_argument("--config", metavar="PATH", help=config_help)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    tools = serve.add_mutually_exclusive_group()
    tools.add_argument("--hash-password", action="store_true",
                       help="read a password (stdin, or a prompt on a terminal) and print its argon2 hash for "
                       "web.users[].password_hash; serves nothing")
    tools.add_argument("--new-token", metavar="NAME",
                       help="print a new bearer token for API client NAME and the sha256 that goes into "
                       "web.users[].token_hash; serves nothing")


def serve_command(args: argparse.Namespace) -> int:
    from cmdm_pipeline.web.auth import hash_password, new_token

    if args.hash_password:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
        if not password:
            print("cmdm serve: an empty password cannot be hashed", file=sys.stderr)
            return EXIT_USAGE
        print(hash_password(password))
        return EXIT_OK
    if args.new_token:
        token, digest = new_token()
        print(f"token for {args.new_token} (give it to the client; it is not stored): {token}")
        print(f"cmdm.yaml web.users entry:\n  - name: {args.new_token}\n    role: api\n    token_hash: {digest}")
        return EXIT_OK
    from cmdm_pipeline.config import ConfigError, load_config
    from cmdm_pipeline.errors import ProtectionError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"cmdm serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not config.web.users:
        print("cmdm serve: no users under web.users in cmdm.yaml: nobody could log in "
              "(`cmdm serve --hash-password` prints a password hash)", file=sys.stderr)
        return EXIT_USAGE
    from cmdm_pipeline.web.snapshot import MANIFEST, snapshot_folder

    if not (snapshot_folder(config.warehouse_path) / MANIFEST).is_file():
        print(f"cmdm serve: nothing to serve yet: no run has published a workbench snapshot in "
              f"{snapshot_folder(config.warehouse_path)}; run `cmdm run` first", file=sys.stderr)
        return EXIT_FAILED
    try:
        from cmdm_pipeline.protect.keys.kek import load_keyring

        load_keyring(config)  # fail now, not at the first request, when the key is missing or wrong
    except ProtectionError as exc:
        print(f"cmdm serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    import uvicorn

    from cmdm_pipeline.web.app import create_app

    app = create_app(config)
    print(f"cmdm serve: http://{args.host}:{args.port}/ (decisions: {config.decision_store_path})", file=sys.stderr)
    from cmdm_pipeline.progress import showing

    try:
        with showing(None):  # a resolve standardises its record: no progress lines per request
            uvicorn.run(app, host=args.host, port=args.port, log_level="info", server_header=False, proxy_headers=False)
    except OSError as exc:  # pragma: no cover - port in use and the like
        print(f"cmdm serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
