"""One typed settings object, read from ``HEALTHLINK_*`` environment variables.

Nothing reads the environment at import time: entry points call :func:`load_settings`
and hand the result to ``create_app(settings)`` or the CLI commands.  Every field has
help text; ``docs/configuration.md`` is checked against these fields by a test.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_PATIENTS = 2_000  # Patient records of the generated demo region, by default (docs/demo-region.md)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEALTHLINK_", extra="forbid")

    database_url: str = Field(
        "sqlite:///./var/healthlink.db",
        description="SQLAlchemy URL. SQLite file (embedded default) or "
        "postgresql+psycopg://user@host:5432/db for production.",
    )
    sqlite_synchronous: str = Field(
        "FULL",
        description="SQLite PRAGMA synchronous in WAL mode: FULL (durable on power loss, "
        "the default) or NORMAL (durable on process crash only).",
    )
    db_pool_size: int = Field(10, ge=1, description="PostgreSQL connection pool size per worker (as many "
                              "again may be opened for a moment beyond it).")
    request_threads: int = Field(
        0, ge=0, description="Requests a worker process serves at once (the threads that run request "
        "handlers; more wait their turn in the process). 0: on PostgreSQL the pool size less three "
        "connections kept for the audit writer, the ledger sequencer and other background work, so "
        "that no connection is opened and closed per request under load; 40 on SQLite.")
    db_pool_timeout: float = Field(
        5.0, description="Seconds to wait for a pooled connection before answering 503."
    )
    # issue 9 (faults): the pool against a database that goes away (docs/faults.md)
    db_pool_pre_ping: bool = Field(
        True, description="Test a pooled PostgreSQL connection that sat unused for a second or more "
        "with a round trip before it is handed out. Off saves that round trip; a restart of PostgreSQL "
        "then costs one 503 per worker before the pool is renewed.")
    db_connect_timeout: int = Field(
        2, ge=2, le=60, description="Seconds a new PostgreSQL connection may take before the request "
        "is answered 503 (libpq connect_timeout).")
    secret_key: SecretStr | None = Field(
        None,
        description="Key that signs access tokens (HS256). If unset, a random key is "
        "generated once and kept in <data_dir>/secret_key (mode 0600).",
    )
    data_dir: Path = Field(Path("./var"), description="Directory for local state (keys, SQLite file).")
    token_ttl_seconds: int = Field(900, description="Lifetime of an access token in seconds.")
    base_url: str = Field(
        "http://127.0.0.1:8000",
        description="Public base URL; used in Bundle links and fullUrls.",
    )
    host: str = Field("127.0.0.1", description="Address `healthlink serve` binds to.")
    port: int = Field(8000, description="Port `healthlink serve` listens on.")
    workers: int = Field(1, description="Number of server worker processes.")
    tls_certfile: Path | None = Field(None, description="PEM certificate: serve HTTPS directly.")
    tls_keyfile: Path | None = Field(None, description="PEM private key for tls_certfile.")
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies trusted for X-Forwarded-For/-Proto (behind a TLS-terminating proxy).",
    )
    default_page_size: int = Field(20, description="Search page size when _count is not given.")
    max_page_size: int = Field(1000, description="Largest _count a client may ask for.")
    max_bundle_entries: int = Field(
        10000, description="Largest number of entries accepted in one batch/transaction Bundle."
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, description="Largest request body accepted, in bytes."
    )
    # issue 9 (hostile input): per-client rate limits, token buckets in each worker process
    # (docs/security.md); 0 turns a limit off.  Off by default so that tests and benchmarks,
    # which drive thousands of requests from one address, are never throttled.
    rate_limit_per_minute: int = Field(
        0, ge=0,
        description="Requests a minute one authenticated user or system may make (a token bucket per "
        "token subject, bursts up to the same number; per worker process); over it: 429 with "
        "Retry-After. 0: no limit.",
    )
    rate_limit_anonymous_per_minute: int = Field(
        0, ge=0,
        description="Requests a minute one client address may make without a valid token (pages before "
        "sign-in, /fhir/metadata, failed authentication); per worker process. 0: no limit.",
    )
    rate_limit_login_per_minute: int = Field(
        0, ge=0,
        description="Sign-in attempts (POST /api/auth/login, /api/auth/token, /login, patient login and "
        "sign-up) a minute from one client address, on top of the per-account lockout; per worker "
        "process. 0: no limit.",
    )
    audit_batch_max: int = Field(
        512, description="Most audit records the group-commit writer puts in one commit."
    )
    audit_batch_wait_ms: float = Field(
        0.5, ge=0.0,
        description="How long the audit writer thread waits for more records before committing "
        "a batch, in milliseconds (records that arrive while a batch is being written go into "
        "the next one anyway; ADR 0018). Records of request threads (order-time checks) do not "
        "wait: the first waiting thread writes them (ADR 0021).",
    )
    empi_auto_link_threshold: float = Field(
        0.99, gt=0.0, lt=1.0,
        description="EMPI: record pairs with a match probability at or above this are linked to one "
        "person automatically (docs/empi.md).",
    )
    empi_review_threshold: float = Field(
        0.5, gt=0.0, lt=1.0,
        description="EMPI: pairs at or above this but below the auto-link threshold go to the review "
        "queue; below it they stay apart.",
    )
    health_code_ttl_seconds: int = Field(
        300, ge=30, le=86400,
        description="Lifetime of an electronic health code in seconds: a screenshot of the QR stops "
        "working after this (docs/healthcode.md).",
    )
    health_code_key_file: Path | None = Field(
        None,
        description="PEM file with the Ed25519 private key that signs health codes. If unset, a key is "
        "generated once and kept in <data_dir>/health_code_key.pem (mode 0600).",
    )
    health_code_previous_keys: list[Path] = Field(
        [],
        description="JSON list of PEM files with earlier health-code keys (public or private) that "
        "verification still trusts after a key rotation; drop them once the TTL has passed.",
    )
    sms_gateway: str = Field(
        "outbox",
        description="Where SMS go: `outbox` (the platform's own adapter: messages land in the "
        "sms_outbox table, for the demo phone page and the CLI) or `package.module:Class`, a class "
        "implementing healthlink.consent.SmsGateway, loaded at start (docs/consent.md).",
    )
    sms_gateway_options: dict[str, str] = Field(
        {},
        description="JSON object of keyword arguments for the configured SMS gateway class "
        "(endpoint, sender name, a credentials file path ...); unused by `outbox`.",
    )
    consent_code_ttl_seconds: int = Field(
        600, ge=60, le=600,
        description="Lifetime of a patient's one-time authorisation code in seconds (at most 10 "
        "minutes, NIST SP 800-63B-4; docs/consent.md).",
    )
    consent_code_max_tries: int = Field(
        5, ge=1, le=10,
        description="Wrong codes accepted per authorisation request before it is locked; a resend "
        "does not reset the count.",
    )
    consent_code_per_practitioner_per_hour: int = Field(
        10, ge=1,
        description="Most authorisation codes (first sends and resends) one doctor may have sent in "
        "any hour.",
    )
    consent_code_per_phone_per_hour: int = Field(
        5, ge=1,
        description="Most authorisation codes one patient phone number may receive in any hour.",
    )
    grant_ttl_seconds: int = Field(
        4 * 3600, ge=60, le=7 * 24 * 3600,
        description="How long a patient's grant to one doctor lasts at most (it ends earlier when the "
        "encounter closes or the patient revokes it; docs/consent.md).",
    )
    grant_request_ttl_seconds: int = Field(
        600, ge=60, le=3600,
        description="How long an access request waits for the patient's approval.",
    )
    grant_qr_ttl_seconds: int = Field(
        120, ge=15, le=600,
        description="Lifetime of one consultation QR payload on the doctor's screen (the page shows a "
        "fresh one before it expires).",
    )
    break_glass_ttl_seconds: int = Field(
        3600, ge=60, le=24 * 3600,
        description="How long a break-the-glass access lasts.",
    )
    sensitive_categories: list[str] = Field(
        ["mental-health", "hiv-sti", "reproductive-health", "substance-use", "genetics"],
        description="JSON list of the sensitive categories in force: records labelled with one of them "
        "never produce a hint and are left out of a grant unless the patient includes the category "
        "(docs/consent.md, healthlink.fhir.labels).",
    )
    ledger_origin: str = Field(
        "healthlink.example.org/audit-ledger",
        description="The origin line of the audit ledger's checkpoints (C2SP tlog-checkpoint): a name "
        "unique to this deployment, e.g. <commission domain>/audit-ledger; also the signing key's name. "
        "Witnesses are configured with it; changing it starts a new log for them (docs/ledger.md).",
    )
    ledger_key_file: Path | None = Field(
        None,
        description="PEM file with the Ed25519 private key that signs the ledger's checkpoints. If "
        "unset, a key is generated once and kept in <data_dir>/ledger_key.pem (mode 0600); "
        "`healthlink ledger rotate-key` replaces it and keeps the old public key as trusted.",
    )
    ledger_witnesses: list[str] = Field(
        [],
        description="JSON list of witnesses, each \"<URL> <witness vkey>\": every new checkpoint is "
        "pushed to each (c2sp.org/tlog-witness) and their cosignatures are stored with it.",
    )
    ledger_sequencer: bool = Field(
        True, description="Run the ledger's sequencer in this process (one is enough per database; "
        "several are safe: they take turns under a database lock).",
    )
    ledger_interval_seconds: float = Field(
        1.0, gt=0, le=60,
        description="How often the sequencer integrates new audit records and result versions into "
        "the Merkle tree (at most 1 s is the issue's goal).",
    )
    ledger_checkpoint_seconds: float = Field(
        60.0, gt=0, le=86_400,
        description="How often a new signed checkpoint is made (when the tree grew); also on demand.",
    )
    audit_retention_days: int = Field(
        2190, ge=183,
        description="How long audit records keep their bodies (default 6 years, HIPAA practice; at "
        "least 183 days, the Cybersecurity Law's 6 months). `healthlink ledger purge` empties older "
        "bodies and salts; their leaf hashes stay, so the ledger still verifies.",
    )
    recognition_catalogue: Path | None = Field(
        None,
        description="A region's recognition catalogue file (JSON, the format of docs/recognition.md). "
        "At start it is validated and, when it differs from the catalogue in force, stored as the new "
        "one; unset: the catalogue last loaded (`healthlink recognition load`), else the bundled default.",
    )
    medsafety_knowledge: Path | None = Field(
        None,
        description="A region's medication-safety knowledge file (JSON, the format of docs/medsafety.md). "
        "At start it is validated and, when the result differs from the knowledge in force, stored as the "
        "new one; unset: the knowledge last loaded (`healthlink medsafety load`), else the bundled default.",
    )
    medsafety_knowledge_extend: bool = Field(
        False,
        description="Whether `medsafety_knowledge` extends the bundled knowledge base (a vendor's or the "
        "region's entries added, same ids replaced) instead of replacing it.",
    )
    medsafety_interrupt_severities: list[str] = Field(
        ["contraindicated", "major"],
        description="JSON list of the severities of medication-safety findings that interrupt the "
        "prescriber (a hard stop that needs an override reason); the others are shown without "
        "interrupting. Tiering keeps alerts from being overridden by habit (docs/medsafety.md).",
    )
    prereview_institutions: list[str] | None = Field(
        None,
        description="JSON list of the institution ids whose prescriptions go to the regional "
        "pre-review centre; unset: every township-tier institution of the directory (docs/prereview.md).",
    )
    prereview_queue_level: int = Field(
        2, ge=1, le=3,
        description="Pre-review: a prescription with a problem of this level or higher (1 notice, 2 "
        "warning, 3 severe) goes to the pharmacist queue; the others pass automatically.",
    )
    prereview_timeout_minutes: float = Field(
        15.0, gt=0, le=10_080,
        description="Pre-review: minutes a queued prescription may wait for the pharmacist before the "
        "timeout policy applies.",
    )
    prereview_timeout_policy: str = Field(
        "pass",
        description="Pre-review: what happens to a prescription still unreviewed after the timeout: "
        "`pass` (超时通过: outcome `timed-out`, the order may proceed) or `hold` (it stays pending, "
        "marked escalated at the top of the queue).",
    )
    bedside_pairs: list[str] = Field(
        ["bed", "name", "drug", "concentration", "dose", "route", "time"],
        description="JSON list of the pairs the bedside scan compares (三查七对): any of bed, name, gender, "
        "age, drug, concentration, dose, route, time, expiry; `name` is required. The seven pairs by "
        "default; add `expiry` for eight, `gender`, `age` and `expiry` for ten. The pack's expiry, the "
        "order's status and pre-review are checked whatever the list (docs/medsafety.md).",
    )
    bedside_time_window_minutes: int = Field(
        30, ge=1, le=720,
        description="How far from the order's scheduled time a bedside scan may give the dose (minutes "
        "either side; the time pair).",
    )
    region_timezone: str = Field(
        "Asia/Shanghai",
        description="The region's time zone: recognition validity windows are counted in its calendar days.",
    )
    # issue 10: the leaders' dashboard (docs/dashboard.md)
    dashboard_max_age_seconds: float = Field(
        300.0, ge=0,
        description="A dashboard view recounts the pre-aggregated indicators first when their last refresh "
        "is older than this (seconds; incremental, from each source's high-water mark); 0: never on a view, "
        "only by `healthlink dashboard refresh` (docs/dashboard.md).",
    )
    log_level: str = Field("INFO", description="Log level of the JSON request log.")
    demo: bool = Field(
        False, description="Act as `healthlink serve --demo` (the README's run command): migrate, seed "
        "the demo logins and load the generated demo region on start.",
    )
    demo_patients: int = Field(
        DEMO_PATIENTS, ge=0,
        description="Patient records in the generated demo region that `healthlink serve --demo` "
        "and `healthlink demo` load (docs/demo-region.md).",
    )

    @field_validator("sqlite_synchronous")
    @classmethod
    def _sync(cls, v: str) -> str:
        v = v.upper()
        if v not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("must be FULL, NORMAL or EXTRA")
        return v

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, v: SecretStr | None) -> SecretStr | None:
        # issue 9: an HS256 key needs at least 256 bits (RFC 7518 section 3.2); an empty or
        # placeholder value would let anyone who guesses it sign tokens (docs/security.md)
        if v is None:
            return v
        key = v.get_secret_value()
        if len(key) < 32 or key.lower().strip(".-_ ") in ("changeme", "change-me", "secret", "..."):
            raise ValueError("must be at least 32 characters of random text (e.g. the output of "
                             "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`); leave it "
                             "unset to have a random key generated in the data directory")
        return v

    @field_validator("prereview_timeout_policy")
    @classmethod
    def _timeout_policy(cls, v: str) -> str:
        if v not in ("pass", "hold"):
            raise ValueError("must be 'pass' or 'hold'")
        return v

    @field_validator("bedside_pairs")
    @classmethod
    def _bedside_pairs(cls, v: list[str]) -> list[str]:
        known = ("bed", "name", "gender", "age", "drug", "concentration", "dose", "route", "time", "expiry")
        bad = [x for x in v if x not in known]
        if bad:
            raise ValueError(f"unknown pairs {bad}; known: {list(known)}")
        if "name" not in v:
            raise ValueError("the pairs must include 'name' (the patient)")
        return v

    @field_validator("medsafety_interrupt_severities")
    @classmethod
    def _severities(cls, v: list[str]) -> list[str]:
        known = ("contraindicated", "major", "moderate", "minor")
        bad = [x for x in v if x not in known]
        if bad:
            raise ValueError(f"unknown severities {bad}; known: {list(known)}")
        return v

    @field_validator("sensitive_categories")
    @classmethod
    def _sensitive(cls, v: list[str]) -> list[str]:
        from healthlink.fhir.labels import SENSITIVE

        bad = [c for c in v if c not in SENSITIVE]
        if bad:
            raise ValueError(f"unknown sensitive categories {bad}; known: {list(SENSITIVE)}")
        return v

    @field_validator("sms_gateway")
    @classmethod
    def _gateway(cls, v: str) -> str:
        # only the form here; the class itself is imported at start (healthlink.consent.sms)
        if v != "outbox" and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
            raise ValueError("must be 'outbox' or 'package.module:Class' (a class implementing "
                             "healthlink.consent.SmsGateway)")
        return v

    @model_validator(mode="after")
    def _empi_thresholds(self) -> Settings:
        if self.empi_review_threshold > self.empi_auto_link_threshold:
            raise ValueError("empi_review_threshold must not exceed empi_auto_link_threshold")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def signing_key(self) -> str:
        """The token signing key: configured, or generated once per data directory."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.touch(mode=0o600)
        path.write_text(key)
        return key


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (``HEALTHLINK_*``), with explicit overrides."""
    return Settings(**overrides)  # type: ignore[arg-type]


def render_markdown() -> str:
    """The settings table of docs/configuration.md (a test keeps the two equal)."""
    lines = ["| environment variable | default | meaning |", "| --- | --- | --- |"]
    for name, f in Settings.model_fields.items():
        default = f.default
        shown = "(generated)" if name == "secret_key" else "" if default is None else str(default)
        lines.append(f"| `HEALTHLINK_{name.upper()}` | `{shown}` | {f.description} |")
    return "\n".join(lines) + "\n"
