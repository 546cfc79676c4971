"""One typed settings object, read from ``TELEMED_*`` environment variables."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from telemed.limits import Limit, resolve_limits


class Mode(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class SmsBackend(StrEnum):
    OUTBOX = "outbox"  # kept in the outbox for the manager to see, and logged (masked)
    HTTP = "http"  # a JSON webhook to an SMS gateway
    # Providers that operators in Russia use, each through its own HTTP API
    # (telemed.notify.sms_providers), with TELEMED_SMS_LOGIN / _API_KEY / _SENDER.
    SMSRU = "smsru"  # SMS.ru
    SMSC = "smsc"  # SMSC.ru
    SMSAERO = "smsaero"  # SMS Aero


SMS_PROVIDER_URLS: dict[SmsBackend, str] = {
    SmsBackend.SMSRU: "https://sms.ru",
    SmsBackend.SMSC: "https://smsc.ru",
    SmsBackend.SMSAERO: "https://gate.smsaero.ru/v2",
}
"""Each provider's API address, unless ``TELEMED_SMS_BASE_URL`` says another (a reserve
server of the provider's, or a local stand-in in tests)."""


class EmailBackend(StrEnum):
    OUTBOX = "outbox"
    SMTP = "smtp"


class Settings(BaseSettings):
    """Everything an operator can set. Each field is ``TELEMED_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TELEMED_", extra="ignore", frozen=True)

    mode: Mode = Mode.DEVELOPMENT
    # The service's name as patients know it: in the app's header and titles, in every
    # SMS and e-mail, in conclusion PDFs.
    brand_name: str = Field(default="Телемед", min_length=1, max_length=40)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    data_dir: Path = Path("./var")
    database_url: str | None = None
    redis_url: str | None = None
    # Secrets: in development a random one is generated once and kept under the data dir;
    # in production it must be given.
    secret_key: str | None = None
    migrate_on_start: bool = True

    # Public base URL (used for Origin checks and links). Unset: the request's own host.
    public_url: str | None = None
    cookie_secure: bool = False
    session_ttl_hours: int = Field(default=24 * 14, ge=1)

    # A password reset code sent by SMS is good for this long (and for one use).
    password_reset_code_minutes: int = Field(default=15, ge=1, le=1440)
    login_window_minutes: int = Field(default=15, ge=1)
    login_max_failures_per_account: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    # Other rate limits by name, overriding ``telemed.limits.DEFAULT_LIMITS``:
    # '{"register.address": "10/3600"}' (count/seconds).
    rate_limits: dict[str, str] = Field(default_factory=dict)
    # Reverse proxies whose X-Forwarded-For names the real client (addresses or networks,
    # "127.0.0.1,10.0.0.0/8"): rate limits and the audit trail see the client, not the proxy.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A JSON body must arrive whole within this time; an upload may pause this long.
    request_body_timeout_seconds: float = Field(default=30, gt=0)
    upload_idle_timeout_seconds: float = Field(default=60, gt=0)
    # Password hashing (argon2id): production strength by default; lower only for tests.
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_memory_kib: int = Field(default=64 * 1024, ge=8)
    password_hash_parallelism: int = Field(default=4, ge=1)

    document_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    document_quota_bytes: int = Field(default=500 * 1024 * 1024, ge=1024)
    # An unfinished upload's temporary file older than this is certainly abandoned.
    upload_abandoned_hours: float = Field(default=24, gt=0)

    # Consultations: response deadlines, cancellation notice, the no-show window.
    sla_initiative_days: float = Field(default=3, gt=0)
    sla_referral_days: float = Field(default=4, gt=0)
    sla_due_soon_fraction: float = Field(default=0.75, gt=0, lt=1)
    cancel_notice_minutes: int = Field(default=120, ge=0)
    no_show_grace_minutes: int = Field(default=15, ge=0)
    room_opens_minutes: int = Field(default=15, ge=0)
    # Chat: stays open this many days after the consultation ends, then read-only.
    chat_open_days_after_end: float = Field(default=7, ge=0)
    chat_rate_per_minute: int = Field(default=30, ge=1)
    # The doctor who concluded a consultation reads its documents this many days after
    # the conclusion (to amend it); each read is in the audit trail.
    doctor_document_access_days: int = Field(default=30, ge=0, le=3650)
    max_consultation_minutes: int = Field(default=120, ge=5)
    # How far ahead duty slots may be published and consultations scheduled.
    booking_horizon_days: int = Field(default=365, ge=1, le=3650)

    # Notifications: where SMS and e-mail go, and how the outbox retries.
    sms_backend: SmsBackend = SmsBackend.OUTBOX
    email_backend: EmailBackend = EmailBackend.OUTBOX
    sms_http_url: str | None = None
    sms_http_token: str | None = None
    # Any SMS sent over HTTP (the webhook or a provider) waits this long for the answer.
    sms_http_timeout_seconds: float = Field(default=10, gt=0)
    # SMS providers (smsru, smsc, smsaero): the account and the sender name.
    # sms_login: SMSC.ru's login (unset: the API key alone), SMS Aero's account e-mail;
    # sms_api_key: SMS.ru's api_id, SMSC.ru's password (or API key), SMS Aero's API key;
    # sms_sender: the approved sender name (SMS.ru ``from``, SMSC.ru ``sender``, SMS
    # Aero ``sign``); unset: the account's default.
    sms_login: str | None = None
    sms_api_key: str | None = None
    sms_sender: str | None = Field(default=None, min_length=1, max_length=15)
    sms_base_url: str | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(default=15, gt=0)
    email_from: str = "Telemed <no-reply@telemed.local>"
    outbox_max_attempts: int = Field(default=8, ge=1)
    outbox_retry_base_seconds: float = Field(default=30, gt=0)
    # Background work (outbox, reminders, no-shows, deadlines): seconds between rounds;
    # 0 turns it off (tests drive the rounds themselves).
    worker_interval_seconds: float = Field(default=5, ge=0)
    # Origins of the sites and apps that may show the room in a frame (/embed/…):
    # "https://clinic.example,https://app.example" or a JSON list; none by default.
    embed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # With Redis: how long a node's presence entries live without a heartbeat (a node
    # that dies stops showing its users as present after at most this long).
    presence_seconds: float = Field(default=30, ge=3)
    # Processes of ``telemed serve`` on this machine, sharing its port: a number, or
    # "auto" (one per core). More than one needs Redis and PostgreSQL.
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = 1
    # Nodes (each process is one; telemed.cluster): a node's record is written every
    # heartbeat and lives ``node_lost_seconds`` (a killed node is noticed that late);
    # a request to another node waits at most ``node_request_timeout_seconds``.
    node_heartbeat_seconds: float = Field(default=1, gt=0)
    node_lost_seconds: float = Field(default=5, gt=0)
    node_request_timeout_seconds: float = Field(default=10, gt=0)
    # A node takes no new video rooms with this many rooms, or streams (each stream a
    # participant sends or receives: 8 in a 1:1 call); 0: no limit.
    node_max_rooms: int = Field(default=20, ge=0)
    node_max_streams: int = Field(default=160, ge=0)
    # A stopping node (SIGTERM) waits at most this long for its rooms' participants to
    # move to other nodes, then closes what is left.
    node_drain_seconds: float = Field(default=10, ge=0)
    # Recordings: whether the patient may download them (the doctor and the manager may),
    # and how many days they are kept.
    recording_patient_access: bool = False
    recording_retention_days: int = Field(default=30, ge=1)
    ice_servers: list[dict[str, Any]] = Field(default_factory=list)
    # TURN with short-lived credentials for each join (coturn's use-auth-secret): the
    # shared secret, the server's turn:/turns: URLs, and how long a credential lasts.
    turn_secret: str | None = None
    turn_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    turn_ttl_hours: float = Field(default=6, gt=0, le=48)
    # "127.0.0.1,::1" or a JSON list (NoDecode: the environment's text reaches the
    # validator below as it is, not parsed as JSON first).
    media_addresses: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A participant whose connection to the server dropped (its socket lost, not
    # closed) keeps its place in the room, and its media connection, this long: a page
    # back within it goes on where it was. The others see it reconnecting meanwhile.
    room_return_seconds: float = Field(default=15, ge=0)
    # A viewer whose link carries less (its browser's estimate) gets audio only.
    media_video_floor_kbps: int = Field(default=150, ge=30, le=5000)

    # GET /metrics (Prometheus): clients from these addresses or networks may read it
    # without a token (loopback only by default; empty: none), others only with
    # ``Authorization: Bearer <TELEMED_METRICS_TOKEN>`` (unset: nobody else).
    metrics_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"]
    )
    metrics_token: str | None = None
    # Also answer GET /metrics (and nothing else) on this port of TELEMED_HOST; with
    # ``--workers N``, worker n on this port + n, so that each process can be scraped
    # (the main port reaches whichever worker the kernel picks).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    # New accounts' time zone and interface language (each person may change theirs);
    # the language also of the texts sent to them (an imported patient's SMS).
    default_time_zone: str = "Europe/Moscow"
    default_locale: Literal["ru", "en"] = "ru"
    log_level: str = "INFO"

    @field_validator(
        "media_addresses",
        "embed_origins",
        "turn_urls",
        "trusted_proxies",
        "metrics_allow",
        mode="before",
    )
    @classmethod
    def _split_addresses(cls, value: Any) -> Any:
        # Accept "127.0.0.1,::1" as well as a JSON list.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("rate_limits")
    @classmethod
    def _known_limits(cls, value: dict[str, str]) -> dict[str, str]:
        resolve_limits(value)  # raises on an unknown name or a malformed limit
        return value

    @field_validator("trusted_proxies", "metrics_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"not an address or a network: {item!r}") from None
        return value

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> Settings:
        if self.mode is Mode.PRODUCTION:
            if not self.secret_key or len(self.secret_key) < 32:
                raise ValueError("TELEMED_SECRET_KEY must be set (32+ characters) in production")
            if not self.database_url:
                raise ValueError("TELEMED_DATABASE_URL must be set in production")
        if bool(self.turn_secret) != bool(self.turn_urls):
            raise ValueError("TELEMED_TURN_SECRET and TELEMED_TURN_URLS go together")
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise ValueError("TELEMED_METRICS_TOKEN must be 16+ characters")
        if self.turn_secret and len(self.turn_secret) < 16:
            raise ValueError("TELEMED_TURN_SECRET must be 16+ characters")
        if any(not url.startswith(("turn:", "turns:")) for url in self.turn_urls):
            raise ValueError("TELEMED_TURN_URLS must be turn: or turns: URLs")
        if self.sms_backend is SmsBackend.HTTP and not self.sms_http_url:
            raise ValueError("TELEMED_SMS_HTTP_URL must be set for the http SMS backend")
        self.check_sms_provider()
        if self.node_lost_seconds < 2 * self.node_heartbeat_seconds:
            raise ValueError(
                "TELEMED_NODE_LOST_SECONDS must be at least twice TELEMED_NODE_HEARTBEAT_SECONDS"
            )
        self.check_workers()
        return self

    def check_sms_provider(self) -> None:
        """A provider backend needs its account: without one every SMS would fail."""
        backend = self.sms_backend
        if backend not in SMS_PROVIDER_URLS:
            return
        if not self.sms_api_key:
            raise ValueError(f"TELEMED_SMS_API_KEY must be set for the {backend} SMS backend")
        if backend is SmsBackend.SMSAERO and not self.sms_login:
            raise ValueError(
                "TELEMED_SMS_LOGIN (the account's e-mail) must be set for the smsaero SMS backend"
            )
        url = self.sms_base_url
        if url is not None and not url.startswith(("https://", "http://")):
            raise ValueError("TELEMED_SMS_BASE_URL must be an http:// or https:// URL")
        if self.mode is Mode.PRODUCTION and url is not None and url.startswith("http://"):
            raise ValueError(
                "TELEMED_SMS_BASE_URL must be https:// in production (the API key and the "
                "texts, passwords included, cross the network)"
            )

    @property
    def sms_provider_url(self) -> str:
        """The chosen provider's API address, without a trailing slash."""
        url = self.sms_base_url or SMS_PROVIDER_URLS[self.sms_backend]
        return url.rstrip("/")

    @property
    def worker_count(self) -> int:
        """``workers`` as a number ("auto": the machine's cores)."""
        if self.workers == "auto":
            return os.cpu_count() or 1
        return self.workers

    def check_workers(self) -> None:
        """Several processes share their rooms, sockets and limits through Redis, and
        write through PostgreSQL (SQLite's writes are one process's)."""
        if self.metrics_port is not None and self.metrics_port + self.worker_count > 65536:
            raise ValueError("TELEMED_METRICS_PORT + the workers must stay below 65536")
        if self.worker_count == 1:
            return
        if not self.redis_url:
            raise ValueError(
                f"{self.worker_count} workers need Redis: set TELEMED_REDIS_URL (or run one worker)"
            )
        if self.resolved_database_url.startswith("sqlite"):
            raise ValueError(
                f"{self.worker_count} workers need PostgreSQL: set TELEMED_DATABASE_URL "
                "(SQLite takes one writing process)"
            )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'telemed.db').resolve()}"

    @property
    def documents_dir(self) -> Path:
        return self.data_dir / "documents"

    @property
    def session_ttl(self) -> timedelta:
        return timedelta(hours=self.session_ttl_hours)

    @property
    def sla_initiative(self) -> timedelta:
        return timedelta(days=self.sla_initiative_days)

    @property
    def sla_referral(self) -> timedelta:
        return timedelta(days=self.sla_referral_days)

    @property
    def cancel_notice(self) -> timedelta:
        return timedelta(minutes=self.cancel_notice_minutes)

    @property
    def password_reset_code_ttl(self) -> timedelta:
        return timedelta(minutes=self.password_reset_code_minutes)

    @property
    def login_window(self) -> timedelta:
        return timedelta(minutes=self.login_window_minutes)

    @property
    def limits(self) -> dict[str, Limit]:
        limits = resolve_limits(self.rate_limits)
        if "chat.send" not in self.rate_limits:
            limits["chat.send"] = Limit(self.chat_rate_per_minute, 60)
        return limits

    @property
    def booking_horizon(self) -> timedelta:
        return timedelta(days=self.booking_horizon_days)

    def resolved_secret_key(self) -> str:
        """The secret key: given, or generated once into the data dir (development only)."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key
