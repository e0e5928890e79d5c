"""The running platform's parts, wired once from Settings: database, audit writer,
account service and the repository factory.  Shared by the web app, the CLI and jobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from healthlink.access import Actor, Repository, RequestContext, Services
from healthlink.accounts import AccountService
from healthlink.consent import (
    OUTBOX,
    ConsentCodes,
    OutboxGateway,
    SmsGateway,
    build_gateway,
    gateway_class,
)
from healthlink.consent.grants import Grants, grant_key
from healthlink.consent.patients import PatientAccounts
from healthlink.dashboard import Dashboard
from healthlink.db import Database
from healthlink.healthcode import HealthCodes, ResolverRegistry
from healthlink.identity import Identity, LocalPatients
from healthlink.ledger import AuditWriter
from healthlink.ledger import setup as ledger_setup
from healthlink.ledger.log import Ledger
from healthlink.medsafety import knowledge as medsafety_knowledge
from healthlink.medsafety import packs as medsafety_packs
from healthlink.medsafety import store as medsafety_store
from healthlink.medsafety.bedside import Bedside
from healthlink.medsafety.prereview import PreReview
from healthlink.medsafety.service import MedSafety
from healthlink.recognition import load as recognition_load
from healthlink.recognition import store as recognition_store
from healthlink.recognition.service import Recognition
from healthlink.settings import Settings


@dataclass
class Platform:
    settings: Settings
    db: Database
    audit: AuditWriter
    accounts: AccountService
    services: Services
    identity: Identity
    health_codes: HealthCodes
    local_patients: LocalPatients
    sms: SmsGateway
    consent_codes: ConsentCodes
    patient_accounts: PatientAccounts
    grants: Grants
    ledger: Ledger
    recognition: Recognition
    medsafety: MedSafety
    prereview: PreReview
    # bedside verification (issue 8, item 4): set by start(), it calls back into prereview
    bedside: Bedside = field(init=False, repr=False)
    # the leaders' dashboard (issue 10; docs/dashboard.md): set by start()
    dashboard: Dashboard = field(init=False, repr=False)

    @classmethod
    def start(cls, settings: Settings) -> Platform:
        # a configured SMS gateway is loaded first: a bad one stops the start before anything opens
        external = None if settings.sms_gateway == OUTBOX else build_gateway(
            gateway_class(settings.sms_gateway), settings)
        db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous,
                      pool_size=settings.db_pool_size, pool_timeout=settings.db_pool_timeout,
                      connect_timeout=settings.db_connect_timeout, pool_pre_ping=settings.db_pool_pre_ping)
        audit = AuditWriter(db, batch_max=settings.audit_batch_max, wait_ms=settings.audit_batch_wait_ms)
        accounts = AccountService(db, audit, key=settings.signing_key(), ttl=settings.token_ttl_seconds)
        services = Services(db=db, audit=audit, base_url=settings.base_url.rstrip("/") + "/fhir",
                            default_page_size=settings.default_page_size,
                            max_page_size=settings.max_page_size,
                            max_bundle_entries=settings.max_bundle_entries,
                            sensitive=frozenset(settings.sensitive_categories))
        identity = Identity(db, audit, auto_link=settings.empi_auto_link_threshold,
                            review=settings.empi_review_threshold)
        services.linker = identity
        sms: SmsGateway = OutboxGateway(db) if external is None else external
        codes = ConsentCodes.from_settings(settings, sms)
        patients = PatientAccounts.from_settings(settings, sms, audit=audit)
        grants = Grants(services, codes, patients, key=grant_key(settings),
                        grant_ttl=settings.grant_ttl_seconds, request_ttl=settings.grant_request_ttl_seconds,
                        qr_ttl=settings.grant_qr_ttl_seconds, break_glass_ttl=settings.break_glass_ttl_seconds)
        ledger = ledger_setup.ledger(db, settings)
        if settings.recognition_catalogue is not None:  # a bad file stops the start, naming its errors
            recognition_load(settings.recognition_catalogue)
        recognition = Recognition(services, lambda: recognition_store.in_force(db, settings.recognition_catalogue),
                                  tz=settings.region_timezone)
        # the knowledge in force in the store (docs/medsafety.md "Knowledge in the store"); a region's
        # file named in the settings is validated now: a bad file stops the start, naming its errors
        if settings.medsafety_knowledge is not None:
            medsafety_store.build([settings.medsafety_knowledge], extend=settings.medsafety_knowledge_extend)
        medsafety = MedSafety(services, medsafety_store.InForce(db, settings.medsafety_knowledge,
                                                                extend=settings.medsafety_knowledge_extend),
                              interrupt_severities=settings.medsafety_interrupt_severities)
        prereview = PreReview.from_settings(services, medsafety, settings)
        if settings.ledger_sequencer:
            ledger.start()
        plat = cls(settings, db, audit, accounts, services, identity, HealthCodes.from_settings(settings),
                   LocalPatients(services, identity), sms, codes, patients, grants, ledger, recognition,
                   medsafety, prereview)
        plat.bedside = Bedside(services, lambda: medsafety.knowledge, medsafety_packs.load(medsafety_knowledge.load()),
                               pairs=settings.bedside_pairs, window_minutes=settings.bedside_time_window_minutes,
                               tz=settings.region_timezone, prereview=lambda ref: plat.prereview.outcome(ref))
        plat.dashboard = Dashboard(db, tz=settings.region_timezone, max_age_s=settings.dashboard_max_age_seconds,
                                   ledger_status=plat.ledger_status, item_label=plat._item_label)
        return plat

    def _item_label(self, item_id: str) -> str:
        item = self.recognition.catalogue.by_id(item_id)
        return f"{item.name_zh} {item.name_en}" if item else item_id

    def repository(self, ctx: RequestContext) -> Repository:
        return Repository(ctx, self.services)

    def identifier_resolvers(self) -> ResolverRegistry:
        """What a desk may scan: the health code (the national health card and the medical-insurance
        e-voucher would be registered after it, docs/healthcode.md)."""
        return ResolverRegistry([self.health_codes.resolver()])

    def system_repository(self, purpose: str) -> Repository:
        return Repository(RequestContext(actor=Actor.system(purpose), address="local",
                                         purpose_of_use="HOPERAT"), self.services)

    def ping(self) -> bool:
        """Is the database reachable?"""
        from sqlalchemy import text

        try:
            with self.db.read() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001
            return False

    def ledger_status(self) -> dict:
        """The audit administrator's view of the ledger: size, latest checkpoints, witnesses and the
        size each last cosigned, the last verification run, the sequencer's last error."""
        from healthlink.ledger.status import status

        return status(self.db, self.ledger, self.settings)

    def verify_ledger(self, ctx: RequestContext):  # noqa: ANN201
        """Run ``ledger verify`` for an audit administrator: recorded as the last verification and
        audited (``ledger-verify``).  The report (:class:`healthlink.ledger.verify.Report`)."""
        from healthlink.ledger import AuditRecord
        from healthlink.ledger.verify import verify

        rep = verify(self.db, open_note=ledger_setup.note_opener(self.settings))
        self.audit.record(AuditRecord("ledger-verify", ctx.agent(), outcome="success" if rep.ok else "minor",
                                      outcome_desc=f"size {rep.size}, first bad {rep.first_bad}"))
        return rep

    def audit_seq(self, event_id: str) -> int | None:
        from healthlink.ledger.status import audit_seq

        return audit_seq(self.db, event_id)

    def close(self) -> None:
        self.ledger.stop()
        self.audit.close()
        self.db.dispose()
