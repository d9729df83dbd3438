"""A reference processor: the DSR Mesh contract (dsr.system.v1.DataSystem)
implemented in Python, for an international debt-collection agent that holds
debtors and their cases for two of the group's companies.

It is small on purpose and complete where the contract is strict:

- every call carries a bearer token (EdDSA JWT) from an issuer it trusts,
  for its own system id, unexpired, with the method's scope, and the issuer
  must be granted that scope (only the erasure service writes);
- every instruction is checked (addressed here, inside its window, for a
  controller served);
- writes are idempotent by key (the same instruction answers the first
  operation and receipt, another one under the key is ALREADY_EXISTS),
  the work and the receipt commit together, and an Erase finishes in the
  background (the caller follows it with WatchOperation or GetOperation);
- receipts are Ed25519 signatures over "dsr.system.v1.Receipt\\n" + the
  serialised Receipt, bound to the instruction by its digest;
- it acts on access, portability, erasure and restriction; rectification
  and objection are not in its supported_rights and answer UNIMPLEMENTED.

Run it with `python processor.py --help`; docs/processors.md walks through it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import re
import sqlite3
import sys
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "gen"))

import grpc  # noqa: E402
import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: E402
    Ed25519PrivateKey,
)
from google.protobuf import any_pb2, duration_pb2, timestamp_pb2  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from dsr.common.v1 import common_pb2 as common  # noqa: E402
from dsr.system.v1 import system_pb2 as pb  # noqa: E402
from dsr.system.v1 import system_pb2_grpc as pb_grpc  # noqa: E402

log = logging.getLogger("processor")

DOMAIN = "system.dsr-mesh"
SCOPE_DESCRIBE = "system:describe"
SCOPE_READ = "system:read"
SCOPE_WRITE = "system:write"
# The mesh's authorisation policy: which issuer may hold which scope.
GRANTS = {
    "dsr-erasure": {SCOPE_DESCRIBE, SCOPE_READ, SCOPE_WRITE},
    "dsr-discovery": {SCOPE_DESCRIBE, SCOPE_READ},
    "dsr-export": {SCOPE_DESCRIBE, SCOPE_READ},
}
LEEWAY_SECONDS = 30
MAX_WINDOW = timedelta(minutes=15)
KEY_RE = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
RECEIPT_CONTEXT = b"dsr.system.v1.Receipt\n"
BACKUP_RETENTION = timedelta(days=35)


class Refusal(Exception):
    """A call refused with a gRPC code, a message and an ErrorInfo reason;
    never with an identity value in it."""

    def __init__(self, code, message, reason, fields=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.fields = fields or []

    def abort(self, context):
        details = []
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN))
        details.append(info)
        if self.fields:
            bad = any_pb2.Any()
            bad.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in self.fields
                    ]
                )
            )
            details.append(bad)
        context.abort_with_status(
            rpc_status.to_status(
                status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
            )
        )


def invalid(fields):
    return Refusal(grpc.StatusCode.INVALID_ARGUMENT, "invalid argument", "INVALID_ARGUMENT", fields)


# ---------------------------------------------------------------- tokens


class Tokens:
    """Verifies bearer tokens against each trusted issuer's JWKS."""

    def __init__(self, system_id, trusted):
        self.system_id = system_id
        self.keys = {}
        for issuer, path in trusted.items():
            with open(path, encoding="utf-8") as f:
                jwks = json.load(f)
            self.keys[issuer] = {k["kid"]: jwt.PyJWK(k) for k in jwks["keys"]}

    def verify(self, token, key, issuer):
        """The token's claims once its signature, issuer, audience and
        expiry are checked."""
        return jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            audience=self.system_id,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )

    def principal(self, context, scope):
        """The verified claims of the call's token, which must hold `scope`."""
        token = None
        for k, v in context.invocation_metadata():
            if k == "authorization" and v.startswith("Bearer "):
                token = v[len("Bearer ") :]
        if not token:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "no bearer token", "TOKEN_MISSING")
        try:
            header = jwt.get_unverified_header(token)
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "token is malformed", "TOKEN_MALFORMED")
        key = self.keys.get(issuer, {}).get(header.get("kid"))
        if key is None:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED, "token signed by an unknown key", "TOKEN_KEY_UNKNOWN"
            )
        try:
            claims = self.verify(token, key, issuer)
        except jwt.ExpiredSignatureError:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "token has expired", "TOKEN_EXPIRED")
        except jwt.InvalidAudienceError:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED, "token audience is not this system", "TOKEN_AUDIENCE"
            )
        except jwt.PyJWTError:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "token is invalid", "TOKEN_SIGNATURE")
        scopes = set(claims.get("scope", "").split())
        if not scopes <= GRANTS.get(issuer, set()):
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                "a scope is not granted to the token's issuer",
                "SCOPE_NOT_GRANTED",
            )
        if scope not in scopes:
            raise Refusal(grpc.StatusCode.PERMISSION_DENIED, f"missing scope {scope}", "SCOPE_MISSING")
        return claims


# ---------------------------------------------------------------- receipts


class Signer:
    """Signs receipts with an Ed25519 key kept in a PEM file (created once)."""

    def __init__(self, path):
        if not os.path.exists(path):
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        with open(path, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        self.public = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = "ed25519-" + hashlib.sha256(self.public).hexdigest()[:16]

    def sign(self, receipt: pb.Receipt) -> pb.SignedReceipt:
        payload = receipt.SerializeToString()
        return pb.SignedReceipt(
            payload=payload, key_id=self.key_id, signature=self.key.sign(RECEIPT_CONTEXT + payload)
        )


def digest(request) -> bytes:
    """The receipt's instruction digest: SHA-256 of the request as sent,
    with its instruction's validity window cleared."""
    m = type(request)()
    m.CopyFrom(request)
    m.instruction.ClearField("issued_at")
    m.instruction.ClearField("expires_at")
    return hashlib.sha256(m.SerializeToString()).digest()


def ts(t: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(t)
    return out


def pb_date(d: date) -> common.Date:
    return common.Date(year=d.year, month=d.month, day=d.day)


# ---------------------------------------------------------------- the data

SCHEMA = """
create table if not exists debtors (
  key text primary key, controller text not null, full_name text not null,
  email text, phone text, address text, language text not null,
  restricted text not null default '');
create index if not exists debtors_email on debtors(email);
create index if not exists debtors_phone on debtors(phone);
create table if not exists cases (
  key text primary key, debtor text not null, controller text not null,
  reference text not null, claim_amount_sek text not null, opened_on text not null,
  closed_on text, restricted text not null default '');
create index if not exists cases_debtor on cases(debtor);
create table if not exists operations (
  id text primary key, key text not null unique, digest blob not null, kind text not null,
  state integer not null, done integer not null default 0, total integer not null default 0,
  receipt blob, key_id text, signature blob, error text not null default '',
  started real not null, request blob not null);
"""

# The stores, their fields and each field's category.
STORES = {
    "debtors": [
        ("full_name", "contact.name"),
        ("email", "contact.email"),
        ("phone", "contact.phone"),
        ("address", "contact.address"),
    ],
    "cases": [
        ("reference", "legal.case"),
        ("claim_amount_sek", "legal.case"),
        ("opened_on", "legal.case"),
        ("closed_on", "legal.case"),
    ],
}


def load_describe(path, system_id, signer):
    """Describe's answer from the processor's description file (data the
    processor edits: its names, categories, texts in sv and en)."""
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    out = pb.DescribeResponse(
        system_id=system_id,
        display_name=d["display_names"]["en"],
        role=pb.SYSTEM_ROLE_PROCESSOR,
        operator_recipient_id=d["operator_recipient_id"],
        controllers=[common.ControllerRef(organisation_number=c) for c in d["controllers"]],
        supported_rights=[pb.RIGHT_ACCESS, pb.RIGHT_PORTABILITY, pb.RIGHT_ERASURE, pb.RIGHT_RESTRICTION],
        accepted_identities=[
            pb.AcceptedIdentity(type=common.IDENTITY_TYPE_EMAIL, formats=[common.IDENTITY_FORMAT_RAW]),
            pb.AcceptedIdentity(type=common.IDENTITY_TYPE_PHONE, formats=[common.IDENTITY_FORMAT_RAW]),
        ],
        erasure_methods=[pb.ERASURE_METHOD_DELETE],
        signing_keys=[pb.SigningKey(key_id=signer.key_id, algorithm="Ed25519", public_key=signer.public)],
        typical_completion=duration_pb2.Duration(seconds=2),
        backup_retention=duration_pb2.Duration(seconds=int(BACKUP_RETENTION.total_seconds())),
        api_version="1",
        display_names=d["display_names"],
    )
    for c in d["categories"]:
        en, sv = c["texts"]["en"], c["texts"]["sv"]
        desc = out.categories.add(
            category=common.DataCategory(id=c["id"], display_name=en["display_name"]),
            purposes=en["purposes"],
            legal_basis=common.LegalBasis.Value(c["legal_basis"]),
            retention=pb.RetentionRule(
                description=en["retention_description"],
                legal_ground=en.get("retention_legal_ground", ""),
                months=c.get("retention_months", 0),
                anchor=c.get("retention_anchor", ""),
            ),
            source=en["source"],
            provided_by_subject=False,
            portable=False,
        )
        for lang, t in (("en", en), ("sv", sv)):
            desc.texts[lang].CopyFrom(
                pb.CategoryTexts(
                    display_name=t["display_name"],
                    purposes=t["purposes"],
                    retention_description=t["retention_description"],
                    retention_legal_ground=t.get("retention_legal_ground", ""),
                    source=t["source"],
                )
            )
    return out


@dataclass
class Checked:
    """An instruction that passed the header's rules."""

    request_id: str
    controller: str
    key: str


# ---------------------------------------------------------------- the service


class Processor(pb_grpc.DataSystemServicer):
    def __init__(self, system_id, db_path, describe_path, signer, tokens, erase_delay=0.5):
        self.system_id = system_id
        self.db_path = db_path
        self.signer = signer
        self.tokens = tokens
        self.erase_delay = erase_delay
        self.describe = load_describe(describe_path, system_id, signer)
        self.controllers = {c.organisation_number for c in self.describe.controllers}
        self.changed = threading.Condition()
        with self.db() as db:
            db.executescript(SCHEMA)
        # Writes a previous process left unfinished are finished now.
        with self.db() as db:
            left = db.execute("select id from operations where state in (1, 2)").fetchall()
        for (op_id,) in left:
            threading.Thread(target=self.finish, args=(op_id,), daemon=True).start()

    def db(self):
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("pragma journal_mode=wal")
        return _Tx(conn)

    # -- the checks every call passes

    def authorise(self, context, scope):
        self.tokens.principal(context, scope)

    def instruction(self, i: pb.Instruction) -> Checked:
        fields = []
        if not i.request_id:
            fields.append(("instruction.request_id", "required"))
        if not KEY_RE.match(i.idempotency_key):
            fields.append(("instruction.idempotency_key", "8 to 128 of [A-Za-z0-9._:-]"))
        if not i.HasField("issued_at") or not i.HasField("expires_at"):
            fields.append(("instruction.expires_at", "issued_at and expires_at are required"))
        if fields:
            raise invalid(fields)
        if i.system_id != self.system_id:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                "instruction is for another system",
                "INSTRUCTION_MISROUTED",
            )
        now = datetime.now(timezone.utc)
        issued = i.issued_at.ToDatetime(tzinfo=timezone.utc)
        expires = i.expires_at.ToDatetime(tzinfo=timezone.utc)
        if expires - issued > MAX_WINDOW:
            raise invalid([("instruction.expires_at", "at most 15 minutes after issued_at")])
        if issued > now + timedelta(seconds=LEEWAY_SECONDS):
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION, "instruction is not valid yet", "INSTRUCTION_NOT_YET_VALID"
            )
        if expires < now:
            raise Refusal(grpc.StatusCode.FAILED_PRECONDITION, "instruction has expired", "INSTRUCTION_EXPIRED")
        if i.controller.organisation_number not in self.controllers:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                "controller not served by this system",
                "CONTROLLER_NOT_SERVED",
            )
        return Checked(i.request_id, i.controller.organisation_number, i.idempotency_key)

    def guard(self, context, scope, fn):
        try:
            self.authorise(context, scope)
            return fn()
        except Refusal as r:
            r.abort(context)

    def guard_stream(self, context, scope, gen):
        try:
            self.authorise(context, scope)
            yield from gen()
        except Refusal as r:
            r.abort(context)

    # -- reads

    def Describe(self, request, context):
        return self.guard(context, SCOPE_DESCRIBE, lambda: self.describe)

    def Locate(self, request, context):
        def run():
            h = self.instruction(request.instruction)
            emails, phones, ignored, fields = [], [], [], []
            for n, i in enumerate(request.identities):
                if i.type == common.IDENTITY_TYPE_EMAIL:
                    v = i.value.strip().lower()
                    if not EMAIL_RE.match(v):
                        fields.append((f"identities[{n}].value", "not an email address"))
                    emails.append(v)
                elif i.type == common.IDENTITY_TYPE_PHONE:
                    v = re.sub(r"[\s-]", "", i.value)
                    if not PHONE_RE.match(v):
                        fields.append((f"identities[{n}].value", "not a phone number in E.164"))
                    phones.append(v)
                else:
                    ignored.append(i.type)
            if fields:
                raise invalid(fields)
            out = pb.LocateResponse(ignored_identity_types=ignored)
            with self.db() as db:
                debtors = db.execute(
                    "select key, email, phone from debtors where controller = ? and "
                    f"(email in ({','.join('?' * len(emails)) or 'null'}) "
                    f"or phone in ({','.join('?' * len(phones)) or 'null'}))",
                    [h.controller, *emails, *phones],
                ).fetchall()
                keys = [d[0] for d in debtors]
                cases = db.execute(
                    f"select key from cases where debtor in ({','.join('?' * len(keys)) or 'null'})",
                    keys,
                ).fetchall()
            if debtors:
                out.found = True
                out.stores.add(
                    store="debtors",
                    records=[pb.RecordRef(store="debtors", key=k) for k in keys],
                    category_ids=sorted({c for _, c in STORES["debtors"]}),
                )
            if cases:
                out.stores.add(
                    store="cases",
                    records=[pb.RecordRef(store="cases", key=k) for (k,) in cases],
                    category_ids=["legal.case"],
                )
            for _, email, phone in debtors:
                if email and email not in emails:
                    out.linked_identities.add(type=common.IDENTITY_TYPE_EMAIL, format=common.IDENTITY_FORMAT_RAW, value=email)
                if phone and phone not in phones:
                    out.linked_identities.add(type=common.IDENTITY_TYPE_PHONE, format=common.IDENTITY_FORMAT_RAW, value=phone)
            return out

        return self.guard(context, SCOPE_READ, run)

    def Access(self, request, context):
        def run():
            h = self.instruction(request.instruction)
            if request.portable_only:
                # Nothing here was provided by the person (Art. 20(1)).
                return
            with self.db() as db:
                for ref in request.records:
                    rec = self.record(db, h.controller, ref)
                    if rec is None:
                        continue
                    r = pb.Record(ref=ref, restricted=bool(rec["restricted"]))
                    r.restriction_reasons.extend(reasons_pb(rec["restricted"]))
                    for name, category in STORES[ref.store]:
                        v = rec[name]
                        r.fields.add(name=name, category_id=category, value=v or "", null=v is None)
                    if ref.store == "cases" and rec["closed_on"]:
                        r.retention_anchor.CopyFrom(pb_date(date.fromisoformat(rec["closed_on"])))
                    yield pb.AccessResponse(records=[r])

        return self.guard_stream(context, SCOPE_READ, run)

    def FindAffected(self, request, context):
        def run():
            h = self.instruction(request.instruction)
            if not request.category_ids:
                raise invalid([("category_ids", "name at least one category")])
            wanted = set(request.category_ids)
            debtor_cats = wanted & {c for _, c in STORES["debtors"]}
            with self.db() as db:
                rows = db.execute(
                    "select d.key, d.email, d.phone, d.language, count(c.key) from debtors d "
                    "left join cases c on c.debtor = d.key where d.controller = ? group by d.key",
                    [h.controller],
                ).fetchall()
            for _, email, phone, language, ncases in rows:
                cats, count = set(), 0
                if debtor_cats:
                    cats |= debtor_cats
                    count += 1
                if "legal.case" in wanted and ncases:
                    cats.add("legal.case")
                    count += ncases
                if not count:
                    continue
                m = pb.FindAffectedResponse(
                    language=language, category_ids=sorted(cats), record_count=count, window_applied=False
                )
                if email:
                    m.contacts.add(type=common.IDENTITY_TYPE_EMAIL, format=common.IDENTITY_FORMAT_RAW, value=email)
                if phone:
                    m.contacts.add(type=common.IDENTITY_TYPE_PHONE, format=common.IDENTITY_FORMAT_RAW, value=phone)
                yield m

        return self.guard_stream(context, SCOPE_READ, run)

    @staticmethod
    def record(db, controller, ref):
        if ref.store not in STORES:
            return None
        return db.execute(
            f"select * from {ref.store} where key = ? and controller = ?", [ref.key, controller]
        ).fetchone()

    # -- writes

    def Restrict(self, request, context):
        def run():
            h = self.instruction(request.instruction)
            if request.basis == pb.RESTRICTION_REASON_RETENTION:
                raise invalid([("basis", "RETENTION comes with an erasure's retention order")])
            return pb.RestrictResponse(operation=self.claim(h, request, "restrict", background=False))

        return self.guard(context, SCOPE_WRITE, run)

    def Erase(self, request, context):
        def run():
            h = self.instruction(request.instruction)
            if not request.acceptable_methods:
                raise invalid([("acceptable_methods", "name at least one method")])
            return pb.EraseResponse(operation=self.claim(h, request, "erase", background=True))

        return self.guard(context, SCOPE_WRITE, run)

    def Rectify(self, request, context):
        self.guard(context, SCOPE_WRITE, lambda: None)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "rectification is not among this system's rights")

    def Object(self, request, context):
        self.guard(context, SCOPE_WRITE, lambda: None)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "objection is not among this system's rights")

    def Sweep(self, request, context):
        self.guard(context, SCOPE_WRITE, lambda: None)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "retention here is run by the controller's instructions")

    def claim(self, h: Checked, request, kind, background):
        """Claims the instruction's key: the first call starts the work, a
        repeat answers the same operation, another instruction under the
        key is refused."""
        d = digest(request)
        with self.db() as db:
            db.execute("begin immediate")
            row = db.execute("select id, digest, kind, state from operations where key = ?", [h.key]).fetchone()
            if row is None:
                op_id = str(uuid.uuid4())
                db.execute(
                    "insert into operations (id, key, digest, kind, state, total, started, request) "
                    "values (?, ?, ?, ?, 1, ?, ?, ?)",
                    [op_id, h.key, d, kind, len(request.records), time.time(), request.SerializeToString()],
                )
                db.execute("commit")
                fresh = True
            else:
                op_id, known, known_kind, state = row
                if known != d or known_kind != kind:
                    db.execute("commit")
                    raise Refusal(
                        grpc.StatusCode.ALREADY_EXISTS,
                        "idempotency key used for another instruction",
                        "IDEMPOTENCY_KEY_REUSED",
                    )
                # A failed operation is tried again under its key.
                fresh = state == pb.OPERATION_STATE_FAILED
                if fresh:
                    db.execute("update operations set state = 1, error = '' where id = ?", [op_id])
                db.execute("commit")
        if fresh:
            if background:
                threading.Thread(target=self.finish, args=(op_id, self.erase_delay), daemon=True).start()
            else:
                self.finish(op_id)
        return self.operation(op_id)

    def finish(self, op_id, delay=0.0):
        """Does an operation's work and commits it with its receipt; a
        failure is recorded on the operation (retry with the same key)."""
        time.sleep(delay)
        try:
            self.work(op_id)
        except Exception:  # noqa: BLE001 - recorded, never lost
            log.exception("operation %s failed", op_id)
            with self.db() as db:
                db.execute("update operations set state = 4, error = 'internal error' where id = ?", [op_id])
        with self.changed:
            self.changed.notify_all()

    def work(self, op_id):
        with self.db() as db:
            db.execute("begin immediate")
            kind, raw, key, state, d = db.execute(
                "select kind, request, key, state, digest from operations where id = ?", [op_id]
            ).fetchone()
            if state in (3, 4):
                db.execute("commit")
                return
            db.execute("update operations set state = 2 where id = ?", [op_id])
            request = (pb.EraseRequest if kind == "erase" else pb.RestrictRequest).FromString(raw)
            receipt = pb.Receipt(
                system_id=self.system_id,
                request_id=request.instruction.request_id,
                idempotency_key=key,
                instruction_digest=d,
                controller=request.instruction.controller,
            )
            controller = request.instruction.controller.organisation_number
            now = datetime.now(timezone.utc)
            if kind == "erase":
                self.erase(db, controller, request, receipt, now)
            else:
                self.restrict(db, controller, request, receipt)
            receipt.completed_at.CopyFrom(ts(now))
            signed = self.signer.sign(receipt)
            db.execute(
                "update operations set state = 3, done = total, receipt = ?, key_id = ?, signature = ? where id = ?",
                [signed.payload, signed.key_id, signed.signature, op_id],
            )
            db.execute("commit")

    def erase(self, db, controller, request, receipt, now):
        receipt.action = pb.RECEIPT_ACTION_ERASE
        orders = {(o.record.store, o.record.key): o for o in request.retain}
        stores = {}
        for ref in request.records:
            rec = self.record(db, controller, ref)
            outcome = receipt.records.add(record=ref)
            if rec is None:
                outcome.result = pb.RECORD_RESULT_NOT_FOUND
                continue
            s = stores.setdefault(ref.store, [0, 0, 0])
            s[0] += 1
            order = orders.get((ref.store, ref.key))
            held = [r for r in reasons_pb(rec["restricted"]) if r != pb.RESTRICTION_REASON_RETENTION]
            if order is not None or held:
                reason = held[0] if held else pb.RESTRICTION_REASON_RETENTION
                if order is not None:
                    self.set_reasons(db, ref, rec["restricted"], add=pb.RESTRICTION_REASON_RETENTION)
                outcome.result = pb.RECORD_RESULT_RETAINED
                item = receipt.retained.add(
                    record=ref,
                    category_ids=sorted({c for _, c in STORES[ref.store]}),
                    legal_ground=order.legal_ground if order is not None else GROUNDS[reason],
                    restricted=True,
                    reason=reason,
                )
                if order is not None and order.HasField("retain_until"):
                    item.retain_until.CopyFrom(order.retain_until)
                continue
            if pb.ERASURE_METHOD_DELETE not in request.acceptable_methods:
                outcome.result = pb.RECORD_RESULT_REFUSED
                s[2] += 1
                continue
            db.execute(f"delete from {ref.store} where key = ?", [ref.key])
            outcome.result = pb.RECORD_RESULT_ERASED
            outcome.method = pb.ERASURE_METHOD_DELETE
            s[1] += 1
        for store, (matched, affected, refused) in stores.items():
            r = receipt.stores.add(
                store=store,
                category_ids=sorted({c for _, c in STORES[store]}),
                matched=matched,
                affected=affected,
                refused=refused,
            )
            if affected:
                r.method = pb.ERASURE_METHOD_DELETE
                r.hidden_at.CopyFrom(ts(now))
                r.purge_deadline.CopyFrom(ts(now))
                r.backup_expiry.CopyFrom(ts(now + BACKUP_RETENTION))

    def restrict(self, db, controller, request, receipt):
        receipt.action = pb.RECEIPT_ACTION_LIFT_RESTRICTION if request.lift else pb.RECEIPT_ACTION_RESTRICT
        basis = request.basis or pb.RESTRICTION_REASON_REQUEST
        stores = {}
        for ref in request.records:
            rec = self.record(db, controller, ref)
            outcome = receipt.records.add(record=ref)
            if rec is None:
                outcome.result = pb.RECORD_RESULT_NOT_FOUND
                continue
            if request.lift:
                self.set_reasons(db, ref, rec["restricted"], remove=basis)
            else:
                self.set_reasons(db, ref, rec["restricted"], add=basis)
            outcome.result = pb.RECORD_RESULT_APPLIED
            s = stores.setdefault(ref.store, [0, 0])
            s[0] += 1
            s[1] += 1
        for store, (matched, affected) in stores.items():
            receipt.stores.add(
                store=store, category_ids=sorted({c for _, c in STORES[store]}), matched=matched, affected=affected
            )

    @staticmethod
    def set_reasons(db, ref, stored, add=None, remove=None):
        reasons = set(reasons_pb(stored))
        if add:
            reasons.add(add)
        if remove:
            reasons.discard(remove)
        text = ",".join(sorted(pb.RestrictionReason.Name(r) for r in reasons))
        db.execute(f"update {ref.store} set restricted = ? where key = ?", [text, ref.key])

    # -- operations

    def operation(self, op_id):
        with self.db() as db:
            row = db.execute(
                "select id, state, done, total, receipt, key_id, signature, error, started "
                "from operations where id = ?",
                [op_id],
            ).fetchone()
        if row is None:
            raise Refusal(grpc.StatusCode.NOT_FOUND, "no such operation", "OPERATION_NOT_FOUND")
        op = pb.Operation(id=row[0], state=row[1], done=row[2], total=row[3], error=row[7])
        op.start_time.CopyFrom(ts(datetime.fromtimestamp(row[8], timezone.utc)))
        if row[4] is not None:
            op.receipt.CopyFrom(pb.SignedReceipt(payload=row[4], key_id=row[5], signature=row[6]))
        return op

    def GetOperation(self, request, context):
        return self.guard(
            context, SCOPE_READ, lambda: pb.GetOperationResponse(operation=self.operation(request.id))
        )

    def WatchOperation(self, request, context):
        def run():
            op = self.operation(request.id)
            yield pb.WatchOperationResponse(operation=op)
            while op.state not in (pb.OPERATION_STATE_SUCCEEDED, pb.OPERATION_STATE_FAILED) and context.is_active():
                with self.changed:
                    self.changed.wait(timeout=1.0)
                now = self.operation(request.id)
                if now != op:
                    op = now
                    yield pb.WatchOperationResponse(operation=op)

        return self.guard_stream(context, SCOPE_READ, run)


GROUNDS = {
    pb.RESTRICTION_REASON_REQUEST: "GDPR Art. 18(2): restricted at the person's request",
    pb.RESTRICTION_REASON_HOLD: "GDPR Art. 17(3)(e): a legal hold for legal claims",
    pb.RESTRICTION_REASON_RETENTION: "kept under a retention rule",
}


def reasons_pb(stored):
    return [pb.RestrictionReason.Value(r) for r in stored.split(",") if r]


class _Tx:
    """A connection used as a context manager that closes it."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        if kind is not None and self.conn.in_transaction:
            self.conn.execute("rollback")
        self.conn.close()

    def execute(self, *args):
        return self.conn.execute(*args)

    def executescript(self, script):
        return self.conn.executescript(script)


def seed(db_path, path):
    """Loads the processor's own sample data (idempotent)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.executescript(SCHEMA)
    conn.execute("begin")
    for d in data["debtors"]:
        conn.execute(
            "insert or ignore into debtors (key, controller, full_name, email, phone, address, language) "
            "values (?, ?, ?, ?, ?, ?, ?)",
            [d["key"], d["controller"], d["full_name"], d.get("email"), d.get("phone"), d.get("address"), d["language"]],
        )
        for c in d.get("cases", []):
            conn.execute(
                "insert or ignore into cases (key, debtor, controller, reference, claim_amount_sek, opened_on, closed_on) "
                "values (?, ?, ?, ?, ?, ?, ?)",
                [c["key"], d["key"], d["controller"], c["reference"], c["claim_amount_sek"], c["opened_on"], c.get("closed_on")],
            )
    conn.execute("commit")
    conn.close()


def main(argv=None, processor=Processor):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:50070", help="host:port to serve on")
    p.add_argument("--system-id", default="collections-gb", help="the system's id (its tokens' audience)")
    p.add_argument("--database", default=os.path.join(HERE, "processor.db"), help="SQLite file")
    p.add_argument("--describe", default=os.path.join(HERE, "describe.json"), help="the system's description")
    p.add_argument("--seed", help="load sample data from this JSON file first")
    p.add_argument("--signing-key", default=os.path.join(HERE, "receipt.pem"), help="receipt key (created once)")
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="ISSUER=JWKS_FILE",
        help="an issuer's public keys, e.g. dsr-erasure=trust/dsr-erasure-jwks.json (repeat)",
    )
    p.add_argument("--erase-delay", type=float, default=0.5, help="seconds an erasure takes (it runs in the background)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    trusted = {}
    for t in args.trust:
        issuer, _, path = t.partition("=")
        if not path or not os.path.exists(path):
            p.error(f"--trust {t!r}: give ISSUER=JWKS_FILE with an existing file")
        trusted[issuer] = path
    if not trusted:
        p.error("--trust: give at least the erasure service's issuer and JWKS file")
    if args.seed:
        seed(args.database, args.seed)
    servicer = processor(
        args.system_id,
        args.database,
        args.describe,
        Signer(args.signing_key),
        Tokens(args.system_id, trusted),
        erase_delay=args.erase_delay,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_DataSystemServicer_to_server(servicer, server)
    server.add_insecure_port(args.listen)
    server.start()
    log.info("serving %s on %s", args.system_id, args.listen)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
