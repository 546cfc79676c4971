"""The command line: ``telemed serve | db upgrade | create-user | demo | backup | restore``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import uuid
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from aiohttp import web
from pydantic import ValidationError

from telemed import db
from telemed.accounts.models import Locale, Role
from telemed.accounts.service import check_centre_binding, check_new_account, do_create_user
from telemed.app import create_app, passwords_for
from telemed.backup import Restored, Written, create_backup, restore_backup
from telemed.clock import SystemClock
from telemed.demo import demo_password_hashes, load_demo
from telemed.errors import InvalidValue, TelemedError
from telemed.logs import configure_logging
from telemed.notify.senders import keeps_clear_text
from telemed.scheduling.service import do_create_doctor, get_centre
from telemed.serve import serve, supervise, worker_command
from telemed.settings import Mode, Settings, SmsBackend


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="telemed", description="Telemed consultation server")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="overrides TELEMED_HOST")
    serve.add_argument("--port", type=int, help="overrides TELEMED_PORT")
    serve.add_argument("--demo", action="store_true", help="load the demo data first")
    serve.add_argument(
        "--workers",
        type=_workers,
        help='processes sharing the port: a number, or "auto" (one per core); '
        "overrides TELEMED_WORKERS; more than one needs Redis and PostgreSQL",
    )
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)

    database = commands.add_parser("db", help="database schema")
    database_commands = database.add_subparsers(dest="db_command", required=True)
    database_commands.add_parser("upgrade", help="apply the migrations")

    user = commands.add_parser("create-user", help="create an account")
    user.add_argument("--role", required=True, choices=[r.value for r in Role])
    user.add_argument("--phone", required=True)
    user.add_argument("--password", required=True)
    user.add_argument("--name", required=True, help="full name")
    user.add_argument("--email")
    user.add_argument("--birth-date", type=date.fromisoformat, help="YYYY-MM-DD")
    user.add_argument(
        "--centre",
        "--centre-id",
        dest="centre_id",
        type=uuid.UUID,
        metavar="ID",
        help="the medical centre: a doctor's (required), a system client's (required), "
        "a manager's (optional: then the manager sees that centre only)",
    )
    user.add_argument("--specialty", help="doctors: their specialty")
    user.add_argument("--duty", action="store_true", help="doctors: a duty doctor")

    demo = commands.add_parser("demo", help="load idempotent demo data and print the logins")
    demo.add_argument("--force", action="store_true", help="even in production mode")

    backup = commands.add_parser(
        "backup", help="write a consistent copy of the database, documents and recordings"
    )
    backup.add_argument(
        "destination",
        type=Path,
        help="a directory (a new telemed-backup-<UTC time>.tar is written in it), "
        "or a new file name ending in .tar",
    )
    restore = commands.add_parser(
        "restore", help="restore a backup into an empty installation (stop the server first)"
    )
    restore.add_argument("backup", type=Path, help="a .tar file written by telemed backup")
    restore.add_argument(
        "--force",
        action="store_true",
        help="replace the database, documents and recordings of an installation holding data",
    )
    return parser


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError('a number of processes (1 or more), or "auto"')
    return count


async def _freeze_heap(_app: web.Application) -> None:
    # The objects made at start live as long as the process: keep them out of the
    # garbage collector's way. A full collection walks every tracked object; without
    # this, the first one under load paused the server for 70 ms (bench/chat.py).
    gc.collect()
    gc.freeze()


async def _upgrade(settings: Settings) -> None:
    engine = db.create_engine(settings.resolved_database_url)
    try:
        await db.upgrade(engine)
    finally:
        await engine.dispose()


async def _create_user(settings: Settings, args: argparse.Namespace) -> str:
    role = Role(args.role)
    if role is Role.DOCTOR:
        if args.centre_id is None or not args.specialty:
            raise SystemExit("telemed: a doctor needs --centre and --specialty")
    else:
        try:
            check_centre_binding(role, args.centre_id)
        except InvalidValue as exc:
            raise SystemExit(f"telemed: {exc.message} (--centre)") from None
    account = check_new_account(
        full_name=args.name,
        phone=args.phone,
        password=args.password,
        email=args.email,
        birth_date=args.birth_date,
    )
    passwords = passwords_for(settings)
    try:
        password_hash = await passwords.hash(args.password)
    finally:
        passwords.close()
    engine = db.create_engine(settings.resolved_database_url)
    try:
        await db.upgrade(engine)
        factory = db.create_session_factory(engine)
        now = SystemClock().now()
        async with db.transaction(factory) as session:
            if role is Role.DOCTOR:
                _, user, _ = await do_create_doctor(
                    session,
                    account=account,
                    password_hash=password_hash,
                    actor=None,
                    now=now,
                    centre_id=args.centre_id,
                    specialty=args.specialty,
                    is_duty=args.duty,
                    locale=Locale(settings.default_locale),
                    time_zone=settings.default_time_zone,
                    must_change_password=False,
                )
            else:
                if args.centre_id is not None:
                    await get_centre(session, args.centre_id)  # NotFound: no such centre
                user = await do_create_user(
                    session,
                    account=account,
                    password_hash=password_hash,
                    role=role,
                    now=now,
                    locale=Locale(settings.default_locale),
                    time_zone=settings.default_time_zone,
                    centre_id=args.centre_id,
                )
        return f"created {role.value} {user.id} ({user.phone})"
    finally:
        await engine.dispose()


async def _demo(settings: Settings) -> str:
    engine = db.create_engine(settings.resolved_database_url)
    try:
        await db.upgrade(engine)
        factory = db.create_session_factory(engine)
        passwords = passwords_for(settings)
        try:
            hashes = await demo_password_hashes(passwords)
        finally:
            passwords.close()
        async with db.transaction(factory) as session:
            logins = await load_demo(session, password_hashes=hashes, now=SystemClock().now())
    finally:
        await engine.dispose()
    lines = ["Demo logins (sign in on the web page with the phone, or POST /api/v1/auth/login):"]
    lines += [f"  {d.role:<14} {d.phone}  {d.password}   {d.full_name}" for d in logins]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SystemExit(f"telemed: bad settings:\n{exc}") from None
    if getattr(args, "host", None):
        settings = settings.model_copy(update={"host": args.host})
    if getattr(args, "port", None) is not None:
        settings = settings.model_copy(update={"port": args.port})
    if getattr(args, "workers", None) is not None:
        settings = settings.model_copy(update={"workers": args.workers})
        try:
            settings.check_workers()
        except ValueError as exc:
            raise SystemExit(f"telemed: {exc}") from None
    configure_logging(settings.log_level)
    try:
        if args.command == "db":
            asyncio.run(_upgrade(settings))
            print("database is at the latest schema")
        elif args.command == "create-user":
            print(asyncio.run(_create_user(settings, args)))
        elif args.command == "demo":
            if settings.mode is Mode.PRODUCTION and not args.force:
                raise SystemExit("telemed: refusing demo data in production (use --force)")
            print(asyncio.run(_demo(settings)))
        elif args.command == "serve":
            _serve(settings, args)
        elif args.command == "backup":
            written = asyncio.run(
                create_backup(settings, args.destination, now=SystemClock().now())
            )
            print(_backup_report(written))
            if not written.manifest.complete:
                print(
                    "telemed: the backup is written, but the installation itself lacks "
                    "files its database refers to (listed above)",
                    file=sys.stderr,
                )
                raise SystemExit(1)
        elif args.command == "restore":
            print(
                _restore_report(
                    asyncio.run(restore_backup(settings, args.backup, force=args.force))
                )
            )
    except TelemedError as exc:
        print(f"telemed: {exc.message} {exc.details or ''}".rstrip(), file=sys.stderr)
        raise SystemExit(2) from None


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _backup_report(written: Written) -> str:
    manifest = written.manifest
    referenced = ", ".join(
        _count(count, kind) for kind, count in sorted(manifest.referenced.items())
    )
    lines = [
        f"backup written: {written.path}",
        f"  {_count(len(manifest.files), 'file')}, {manifest.total_bytes} bytes; "
        f"{manifest.database.backend} database at schema {manifest.database.schema_revision}; "
        f"the database refers to {referenced or 'no files'}",
    ]
    for missing in manifest.missing:
        why = (
            "deleted after the database was copied"
            if missing.reason == "deleted_after_snapshot"
            else "MISSING from the installation"
        )
        lines.append(f"  {missing.kind} {missing.id}: {missing.path} {why}")
    if manifest.unreferenced:
        lines.append(
            f"  {_count(manifest.unreferenced, 'file')} that the database does not refer to"
        )
    return "\n".join(lines)


def _restore_report(restored: Restored) -> str:
    manifest = restored.manifest
    lines = [
        f"restored the backup of {manifest.created_at.isoformat()} "
        f"(telemed {manifest.telemed_version}): {_count(restored.files, 'file')}; "
        f"database schema {manifest.database.schema_revision} → {restored.schema_revision}"
    ]
    if manifest.missing:
        lines.append(
            f"  {_count(len(manifest.missing), 'file')} that the database refers to "
            'were not in the backup (see its manifest.json, "missing")'
        )
    return "\n".join(lines)


def _no_gateway(settings: Settings) -> str:
    """What a first run must know to finish route 3: where the SMS that were not sent are."""
    where = f"http://{settings.host}:{settings.port}/#/outbox"
    if keeps_clear_text(settings):
        return (
            "SMS are not sent (TELEMED_SMS_BACKEND=outbox): a manager reads them in full, "
            f"passwords and codes included, at {where}"
        )
    return (
        "SMS are not sent (TELEMED_SMS_BACKEND=outbox): they are kept, masked, at "
        f"{where}; configure a gateway (TELEMED_SMS_BACKEND=http, smsru, smsc or smsaero: "
        "docs/deployment.md) for patients to get them"
    )


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    """One process (``--worker``: one of several, the port shared), or the supervisor
    of ``settings.worker_count`` of them."""
    if not args.worker:
        if args.demo:
            print(asyncio.run(_demo(settings)))
        print(f"Telemed on http://{settings.host}:{settings.port}/", flush=True)
        if settings.sms_backend is SmsBackend.OUTBOX:
            print(_no_gateway(settings), flush=True)
        if settings.worker_count > 1:
            if settings.migrate_on_start:
                asyncio.run(_upgrade(settings))
            raise SystemExit(supervise(settings, worker_command(settings)))
    app = create_app(settings)
    # Runs after every start-up step (engine, migrations, workers, Redis link).
    app.on_startup.append(_freeze_heap)
    # Worker threads (the chat writer's SQLite commits, password hashing) wait for the
    # interpreter lock at most this long while the event loop runs: 1 ms instead of 5
    # cut chat latency under load (docs/performance.md).
    sys.setswitchinterval(0.001)
    asyncio.run(serve(app, settings, reuse_port=args.worker))
