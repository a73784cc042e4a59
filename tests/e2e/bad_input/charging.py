"""ChargingService: the catalog, usage ingestion, charges, rerating."""

from __future__ import annotations

from datetime import timedelta

from evolutivo.charging.v1 import catalog_pb2, usage_pb2
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from bad_input import EXISTS, FAILED, INVALID, NOT_FOUND, TOO_BIG, Case, case
from bad_input.values import CONTROL, NOT_A_TOKEN, NOT_UUID, NUL, SCRIPT, SQL, UNKNOWN, long
from bad_input.world import World

S = "/evolutivo.charging.v1.ChargingService/"
# A refused event of a suspended or closed account is kept as REJECTED (docs/charging.md): a change,
# so it has its audit record too (docs/security.md: no change without its record).
KEPT_AS_REJECTED = frozenset({"charging.usage_events", "charging.audit_log"})


def offer(**fields: object) -> catalog_pb2.ChargeOffer:
    values: dict[str, object] = {
        "code": "bad_new_offer",
        "name": "New",
        "currency_code": "EUR",
        "charges": [
            catalog_pb2.Charge(
                code="calls", name="Calls", event_type="api.call", per_unit=catalog_pb2.PerUnitPrice(unit_price="0.01")
            )
        ],
    }
    values.update(fields)
    return catalog_pb2.ChargeOffer(**values)  # type: ignore[arg-type]


def per_unit(price: str) -> catalog_pb2.ChargeOffer:
    return offer(
        charges=[
            catalog_pb2.Charge(
                code="calls", name="Calls", event_type="api.call", per_unit=catalog_pb2.PerUnitPrice(unit_price=price)
            )
        ]
    )


def create(o: catalog_pb2.ChargeOffer) -> pb.CreateChargeOfferRequest:
    return pb.CreateChargeOfferRequest(charge_offer=o)


def event(w: World, **fields: object) -> usage_pb2.UsageEvent:
    values: dict[str, object] = {
        "event_id": "bad-input-new-event",
        "account_id": w.account_id,
        "event_type": "api.call",
        "event_time": to_timestamp(w.now),
        "quantity": "1",
    }
    values.update(fields)
    return usage_pb2.UsageEvent(**values)  # type: ignore[arg-type]


def usage(w: World, **fields: object) -> pb.RecordUsageRequest:
    return pb.RecordUsageRequest(event=event(w, **fields))


def events(w: World, count: int) -> list[usage_pb2.UsageEvent]:
    return [event(w, event_id=f"bad-batch-{i}") for i in range(count)]


def rerate(w: World, **fields: object) -> pb.RerateUsageRequest:
    values: dict[str, object] = {
        "account_id": w.account_id,
        "start_time": to_timestamp(w.now - timedelta(days=1)),
        "end_time": to_timestamp(w.now + timedelta(hours=1)),
        "request_id": "6b0c2c9e-1f55-4b8e-9d44-0d7c8a3f2e10",
    }
    values.update(fields)
    return pb.RerateUsageRequest(**values)  # type: ignore[arg-type]


CASES: list[Case] = [
    # --- GetChargingAccount
    case(
        S + "GetChargingAccount",
        "account id not a UUID",
        lambda w: pb.GetChargingAccountRequest(account_id=NOT_UUID),
        INVALID,
        "account_id",
    ),
    case(
        S + "GetChargingAccount",
        "account id SQL-looking",
        lambda w: pb.GetChargingAccountRequest(account_id=SQL),
        INVALID,
        "account_id",
    ),
    case(
        S + "GetChargingAccount",
        "unknown account",
        lambda w: pb.GetChargingAccountRequest(account_id=UNKNOWN),
        NOT_FOUND,
    ),
    # --- CreateChargeOffer
    case(S + "CreateChargeOffer", "offer missing", lambda w: pb.CreateChargeOfferRequest(), INVALID, "charge_offer"),
    case(S + "CreateChargeOffer", "code missing", lambda w: create(offer(code="")), INVALID, "charge_offer.code"),
    case(S + "CreateChargeOffer", "code SQL-looking", lambda w: create(offer(code=SQL)), INVALID, "charge_offer.code"),
    case(
        S + "CreateChargeOffer",
        "code script-looking",
        lambda w: create(offer(code=SCRIPT)),
        INVALID,
        "charge_offer.code",
    ),
    case(
        S + "CreateChargeOffer",
        "code over-long",
        lambda w: create(offer(code=long(300, "a"))),
        INVALID,
        "charge_offer.code",
    ),
    case(
        S + "CreateChargeOffer",
        "name over-long",
        lambda w: create(offer(name=long(5000))),
        INVALID,
        "charge_offer.name",
    ),
    case(S + "CreateChargeOffer", "name with NUL", lambda w: create(offer(name=NUL)), INVALID, "charge_offer.name"),
    case(
        S + "CreateChargeOffer",
        "currency unknown",
        lambda w: create(offer(currency_code="ZZZ")),
        INVALID,
        "charge_offer.currency_code",
    ),
    case(
        S + "CreateChargeOffer",
        "currency missing",
        lambda w: create(offer(currency_code="")),
        INVALID,
        "charge_offer.currency_code",
    ),
    case(
        S + "CreateChargeOffer",
        "charge without a price",
        lambda w: create(offer(charges=[catalog_pb2.Charge(code="calls", name="Calls", event_type="api.call")])),
        INVALID,
        "charge_offer.charges[0]",
    ),
    case(
        S + "CreateChargeOffer", "unit price NaN", lambda w: create(per_unit("NaN")), INVALID, "charge_offer.charges[0]"
    ),
    case(
        S + "CreateChargeOffer",
        "unit price Infinity",
        lambda w: create(per_unit("Infinity")),
        INVALID,
        "charge_offer.charges[0]",
    ),
    case(
        S + "CreateChargeOffer",
        "unit price negative",
        lambda w: create(per_unit("-0.01")),
        INVALID,
        "charge_offer.charges[0]",
    ),
    case(
        S + "CreateChargeOffer",
        "unit price huge",
        lambda w: create(per_unit("1e400")),
        INVALID,
        "charge_offer.charges[0]",
    ),
    case(
        S + "CreateChargeOffer",
        "unit price not a number",
        lambda w: create(per_unit("cheap")),
        INVALID,
        "charge_offer.charges[0]",
    ),
    case(
        S + "CreateChargeOffer",
        "recurring fee without a timing",
        lambda w: create(
            offer(charges=[catalog_pb2.Charge(code="m", name="M", recurring=catalog_pb2.RecurringFee(amount="1"))])
        ),
        INVALID,
        "charge_offer.charges[0].recurring.timing",
    ),
    case(
        S + "CreateChargeOffer",
        "two charges with one code",
        lambda w: create(
            offer(
                charges=[
                    catalog_pb2.Charge(
                        code="calls", name="A", event_type="api.call", per_unit=catalog_pb2.PerUnitPrice(unit_price="1")
                    ),
                    catalog_pb2.Charge(
                        code="calls", name="B", event_type="api.call", per_unit=catalog_pb2.PerUnitPrice(unit_price="2")
                    ),
                ]
            )
        ),
        INVALID,
        "charge_offer.charges[1]",
    ),
    case(
        S + "CreateChargeOffer",
        "valid_to before valid_from",
        lambda w: create(
            offer(valid_from=to_timestamp(w.now + timedelta(days=2)), valid_to=to_timestamp(w.now + timedelta(days=1)))
        ),
        INVALID,
        "charge_offer.valid_to",
    ),
    case(
        S + "CreateChargeOffer",
        "valid_from beyond year 9999",
        lambda w: create(offer(valid_from=Timestamp(seconds=400_000_000_000))),
        INVALID,
        "charge_offer.valid_from",
    ),
    case(
        S + "CreateChargeOffer",
        "1001 charges",
        lambda w: create(
            offer(
                charges=[
                    catalog_pb2.Charge(code=f"c{i}", name="C", one_time=catalog_pb2.OneTimeFee(amount="1"))
                    for i in range(1001)
                ]
            )
        ),
        INVALID,
        "charge_offer.charges",
    ),
    case(
        S + "CreateChargeOffer",
        "request id not a UUID",
        lambda w: pb.CreateChargeOfferRequest(charge_offer=offer(), request_id=NOT_UUID),
        INVALID,
        "request_id",
    ),
    # --- UpdateChargeOffer
    case(
        S + "UpdateChargeOffer",
        "update mask missing",
        lambda w: pb.UpdateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(charge_offer_id=w.draft_offer_id, name="X")
        ),
        INVALID,
        "update_mask",
    ),
    case(
        S + "UpdateChargeOffer",
        "update mask names the code",
        lambda w: pb.UpdateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(charge_offer_id=w.draft_offer_id, code="other"),
            update_mask=FieldMask(paths=["code"]),
        ),
        INVALID,
        "update_mask",
    ),
    case(
        S + "UpdateChargeOffer",
        "currency unknown",
        lambda w: pb.UpdateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(charge_offer_id=w.draft_offer_id, currency_code="XYZ"),
            update_mask=FieldMask(paths=["currency_code"]),
        ),
        INVALID,
        "charge_offer.currency_code",
    ),
    case(
        S + "UpdateChargeOffer",
        "an active version",
        lambda w: pb.UpdateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(charge_offer_id=w.offer_id, name="Changed"),
            update_mask=FieldMask(paths=["name"]),
        ),
        FAILED,
    ),
    case(
        S + "UpdateChargeOffer",
        "offer id not a UUID",
        lambda w: pb.UpdateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(charge_offer_id=SQL, name="X"), update_mask=FieldMask(paths=["name"])
        ),
        INVALID,
        "charge_offer.charge_offer_id",
    ),
    case(
        S + "UpdateChargeOffer",
        "unknown offer",
        lambda w: pb.UpdateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(charge_offer_id=UNKNOWN, name="X"),
            update_mask=FieldMask(paths=["name"]),
        ),
        NOT_FOUND,
    ),
    # --- ActivateChargeOffer / RetireChargeOffer
    case(
        S + "ActivateChargeOffer",
        "offer id not a UUID",
        lambda w: pb.ActivateChargeOfferRequest(charge_offer_id=NOT_UUID),
        INVALID,
        "charge_offer_id",
    ),
    case(
        S + "ActivateChargeOffer",
        "unknown offer",
        lambda w: pb.ActivateChargeOfferRequest(charge_offer_id=UNKNOWN),
        NOT_FOUND,
    ),
    case(
        S + "ActivateChargeOffer",
        "an active version",
        lambda w: pb.ActivateChargeOfferRequest(charge_offer_id=w.offer_id),
        FAILED,
    ),
    case(
        S + "RetireChargeOffer", "offer id missing", lambda w: pb.RetireChargeOfferRequest(), INVALID, "charge_offer_id"
    ),
    case(
        S + "RetireChargeOffer",
        "unknown offer",
        lambda w: pb.RetireChargeOfferRequest(charge_offer_id=UNKNOWN),
        NOT_FOUND,
    ),
    case(
        S + "RetireChargeOffer",
        "a draft version",
        lambda w: pb.RetireChargeOfferRequest(charge_offer_id=w.draft_offer_id),
        FAILED,
    ),
    # --- GetChargeOffer / ListChargeOffers
    case(S + "GetChargeOffer", "neither id nor code", lambda w: pb.GetChargeOfferRequest(), INVALID, "charge_offer_id"),
    case(
        S + "GetChargeOffer",
        "both id and code",
        lambda w: pb.GetChargeOfferRequest(charge_offer_id=w.offer_id, code=w.offer_code),
        INVALID,
        "code",
    ),
    case(
        S + "GetChargeOffer",
        "id not a UUID",
        lambda w: pb.GetChargeOfferRequest(charge_offer_id=NOT_UUID),
        INVALID,
        "charge_offer_id",
    ),
    case(S + "GetChargeOffer", "unknown code", lambda w: pb.GetChargeOfferRequest(code="no_such_offer"), NOT_FOUND),
    case(S + "GetChargeOffer", "code SQL-looking", lambda w: pb.GetChargeOfferRequest(code=SQL), NOT_FOUND),
    case(
        S + "ListChargeOffers",
        "page size negative",
        lambda w: pb.ListChargeOffersRequest(page_size=-1),
        INVALID,
        "page_size",
    ),
    case(
        S + "ListChargeOffers",
        "page token forged",
        lambda w: pb.ListChargeOffersRequest(page_token=NOT_A_TOKEN),
        INVALID,
        "page_token",
    ),
    case(
        S + "ListChargeOffers",
        "status out of the enum",
        lambda w: pb.ListChargeOffersRequest(status=12),
        INVALID,
        "status",
    ),
    # --- RecordUsage
    case(S + "RecordUsage", "event missing", lambda w: pb.RecordUsageRequest(), INVALID, "event"),
    case(S + "RecordUsage", "event id missing", lambda w: usage(w, event_id=""), INVALID, "event.event_id"),
    case(S + "RecordUsage", "event id over-long", lambda w: usage(w, event_id=long(201)), INVALID, "event.event_id"),
    case(
        S + "RecordUsage",
        "event id with control characters",
        lambda w: usage(w, event_id=CONTROL),
        INVALID,
        "event.event_id",
    ),
    case(S + "RecordUsage", "account id not a UUID", lambda w: usage(w, account_id=SQL), INVALID, "event.account_id"),
    case(S + "RecordUsage", "event type missing", lambda w: usage(w, event_type=""), INVALID, "event.event_type"),
    case(
        S + "RecordUsage",
        "event type no offer rates",
        lambda w: usage(w, event_type="nobody.rates.this"),
        INVALID,
        "event.event_type",
    ),
    case(
        S + "RecordUsage",
        "event type script-looking",
        lambda w: usage(w, event_type=SCRIPT),
        INVALID,
        "event.event_type",
    ),
    case(
        S + "RecordUsage",
        "event time missing",
        lambda w: pb.RecordUsageRequest(
            event=usage_pb2.UsageEvent(
                event_id="bad-no-time", account_id=w.account_id, event_type="api.call", quantity="1"
            )
        ),
        INVALID,
        "event.event_time",
    ),
    case(
        S + "RecordUsage",
        "event time beyond year 9999",
        lambda w: usage(w, event_time=Timestamp(seconds=400_000_000_000)),
        INVALID,
        "event.event_time",
    ),
    case(S + "RecordUsage", "quantity NaN", lambda w: usage(w, quantity="NaN"), INVALID, "event.quantity"),
    case(S + "RecordUsage", "quantity sNaN", lambda w: usage(w, quantity="sNaN"), INVALID, "event.quantity"),
    case(S + "RecordUsage", "quantity -Infinity", lambda w: usage(w, quantity="-Infinity"), INVALID, "event.quantity"),
    case(S + "RecordUsage", "quantity zero", lambda w: usage(w, quantity="0"), INVALID, "event.quantity"),
    case(S + "RecordUsage", "quantity negative", lambda w: usage(w, quantity="-5"), INVALID, "event.quantity"),
    case(S + "RecordUsage", "quantity huge", lambda w: usage(w, quantity="1e400"), INVALID, "event.quantity"),
    case(S + "RecordUsage", "quantity not a number", lambda w: usage(w, quantity="1,5"), INVALID, "event.quantity"),
    case(
        S + "RecordUsage",
        "65 properties",
        lambda w: usage(w, properties={f"p{i}": "v" for i in range(65)}),
        INVALID,
        "event.properties",
    ),
    case(
        S + "RecordUsage",
        "property value with NUL",
        lambda w: usage(w, properties={"region": NUL}),
        INVALID,
        "event.properties",
    ),
    case(
        S + "RecordUsage", "service id not a UUID", lambda w: usage(w, service_id=NOT_UUID), INVALID, "event.service_id"
    ),
    case(
        S + "RecordUsage",
        "event id reused with another payload",
        lambda w: usage(w, event_id=w.event_id, quantity="151"),
        EXISTS,
        reason="USAGE_EVENT_ID_REUSED",
    ),
    case(
        S + "RecordUsage",
        "suspended account",
        lambda w: usage(w, event_id="bad-suspended", account_id=w.suspended_account_id),
        FAILED,
        writes=KEPT_AS_REJECTED,
    ),
    case(
        S + "RecordUsage",
        "closed account",
        lambda w: usage(w, event_id="bad-closed", account_id=w.closed_account_id),
        FAILED,
        writes=KEPT_AS_REJECTED,
    ),
    # --- RecordUsageBatch / StreamUsage
    case(
        S + "RecordUsageBatch",
        "1001 events",
        lambda w: pb.RecordUsageBatchRequest(events=events(w, 1001)),
        INVALID,
        "events",
    ),
    case(
        S + "RecordUsageBatch",
        "a message over 4 MiB",
        lambda w: pb.RecordUsageBatchRequest(
            events=[event(w, event_id=f"big-{i}", properties={"blob": long(9000)}) for i in range(500)]
        ),
        TOO_BIG,
    ),
    case(
        S + "StreamUsage",
        "a slice of 1001 events",
        lambda w: [pb.StreamUsageRequest(events=events(w, 1001))],
        INVALID,
        "events",
    ),
    case(
        S + "StreamUsage",
        "a slice over 4 MiB",
        lambda w: [
            pb.StreamUsageRequest(
                events=[event(w, event_id=f"big-{i}", properties={"blob": long(9000)}) for i in range(500)]
            )
        ],
        TOO_BIG,
    ),
    # --- ListCharges / ListUnratedUsage
    case(
        S + "ListCharges",
        "account id not a UUID",
        lambda w: pb.ListChargesRequest(account_id=NOT_UUID),
        INVALID,
        "account_id",
    ),
    case(
        S + "ListCharges",
        "cycle id not a UUID",
        lambda w: pb.ListChargesRequest(account_id=w.account_id, bill_cycle_id=SQL),
        INVALID,
        "bill_cycle_id",
    ),
    case(
        S + "ListCharges",
        "page token forged",
        lambda w: pb.ListChargesRequest(account_id=w.account_id, page_token=NOT_A_TOKEN),
        INVALID,
        "page_token",
    ),
    case(
        S + "ListUnratedUsage",
        "account id not a UUID",
        lambda w: pb.ListUnratedUsageRequest(account_id=SQL),
        INVALID,
        "account_id",
    ),
    case(
        S + "ListUnratedUsage",
        "page size negative",
        lambda w: pb.ListUnratedUsageRequest(page_size=-3),
        INVALID,
        "page_size",
    ),
    # --- ResubmitUsage
    case(S + "ResubmitUsage", "no event ids", lambda w: pb.ResubmitUsageRequest(), INVALID, "event_ids"),
    case(
        S + "ResubmitUsage",
        "1001 event ids",
        lambda w: pb.ResubmitUsageRequest(event_ids=[f"e{i}" for i in range(1001)]),
        INVALID,
        "event_ids",
    ),
    case(
        S + "ResubmitUsage",
        "an empty event id",
        lambda w: pb.ResubmitUsageRequest(event_ids=["x", ""]),
        INVALID,
        "event_ids[1]",
    ),
    # --- RerateUsage
    case(S + "RerateUsage", "start time missing", lambda w: rerate(w, start_time=None), INVALID, "start_time"),
    case(S + "RerateUsage", "end time missing", lambda w: rerate(w, end_time=None), INVALID, "end_time"),
    case(
        S + "RerateUsage",
        "end before start",
        lambda w: rerate(w, start_time=to_timestamp(w.now), end_time=to_timestamp(w.now - timedelta(days=1))),
        INVALID,
        "end_time",
    ),
    case(S + "RerateUsage", "account id not a UUID", lambda w: rerate(w, account_id=NOT_UUID), INVALID, "account_id"),
    case(S + "RerateUsage", "request id missing", lambda w: rerate(w, request_id=""), INVALID, "request_id"),
    case(
        S + "RerateUsage",
        "offer code SQL-looking",
        lambda w: rerate(w, charge_offer_code=SQL),
        INVALID,
        "charge_offer_code",
    ),
    case(S + "RerateUsage", "unknown account", lambda w: rerate(w, account_id=UNKNOWN), NOT_FOUND),
]
