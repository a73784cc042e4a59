"""The charge-offer catalog against a real, migrated database: versions, activation (one version in
force at a time, also under concurrent activations), immutability, retirement, lookups by code at
an instant, keyset pages, idempotent creation, events in the outbox, and field-named errors that
write nothing."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from alembic import command
from evolutivo.charging.v1 import catalog_pb2 as c
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as pb_grpc
from evolutivo.charging.v1 import events_pb2
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import charge_offers, outbox, request_log
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from evolutivo_runtime.migrations import alembic_config, upgrade_to_head
from evolutivo_runtime.server.interceptors import ServiceInterceptor
from evolutivo_runtime.timestamps import from_timestamp, to_timestamp
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import select
from support.databases import MigratedDatabase, ServiceDb
from support.rpc import bad_request_fields, serving

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
T2 = NOW + timedelta(days=30)
NO_CONTEXT: Any = None


class CatalogDb(ServiceDb):
    def uow(self) -> ChargingUnitOfWork:
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log)

    def servicer(self) -> ChargingServicer:
        return ChargingServicer(self.uow)

    async def published(self) -> list[tuple[str, bytes]]:
        rows = await self.rows(select(outbox.c.subject, outbox.c.payload).order_by(outbox.c.seq))
        return [(r.subject, r.payload) for r in rows]


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[CatalogDb]:
    async with CatalogDb.open(await migrated_database("charging_catalog", MIGRATIONS), NOW, pool_size=10) as database:
        yield database


API_CALLS = c.Charge(
    code="api_calls", name="API calls", event_type="api.call", per_unit=c.PerUnitPrice(unit_price="0.0004")
)
STORAGE = c.Charge(
    code="storage",
    name="Storage",
    event_type="storage.gb_hour",
    graduated=c.TieredPrice(tiers=[c.Tier(up_to="100", unit_price="0"), c.Tier(unit_price="0.02")]),
)
MONTHLY = c.Charge(
    code="monthly",
    name="Monthly",
    recurring=c.RecurringFee(amount="49", timing=c.RECURRING_TIMING_IN_ADVANCE, prorate=True),
)


def new_offer(
    code: str = "api_pro",
    charges: list[c.Charge] | None = None,
    valid_from: datetime | None = None,
    currency_code: str = "EUR",
    **fields: Any,
) -> c.ChargeOffer:
    return c.ChargeOffer(
        code=code,
        name=fields.pop("name", "API Pro"),
        currency_code=currency_code,
        valid_from=to_timestamp(valid_from),
        charges=[API_CALLS] if charges is None else charges,
        **fields,
    )


async def create(db: CatalogDb, offer: c.ChargeOffer, request_id: str = "") -> c.ChargeOffer:
    response = await db.servicer().CreateChargeOffer(
        pb.CreateChargeOfferRequest(charge_offer=offer, request_id=request_id), NO_CONTEXT
    )
    return response.charge_offer


async def activate(db: CatalogDb, charge_offer_id: str) -> c.ChargeOffer:
    response = await db.servicer().ActivateChargeOffer(
        pb.ActivateChargeOfferRequest(charge_offer_id=charge_offer_id), NO_CONTEXT
    )
    return response.charge_offer


async def get(db: CatalogDb, **request: Any) -> c.ChargeOffer:
    return (await db.servicer().GetChargeOffer(pb.GetChargeOfferRequest(**request), NO_CONTEXT)).charge_offer


async def list_all(db: CatalogDb, size: int, **filters: Any) -> list[pb.ListChargeOffersResponse]:
    pages, token = [], ""
    while True:
        page = await db.servicer().ListChargeOffers(
            pb.ListChargeOffersRequest(page_size=size, page_token=token, **filters), NO_CONTEXT
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages
        assert len(pages) < 100, "pagination does not end"


# Migrations.


async def test_the_catalog_migration_goes_down_and_up_again(db: CatalogDb) -> None:
    await db.engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(MIGRATIONS, db.url), "0002")
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: sync.dialect.get_table_names(sync))
    assert "charge_offers" not in tables and "request_log" not in tables
    await asyncio.to_thread(upgrade_to_head, MIGRATIONS, db.url)
    assert await db.count(charge_offers) == 0


# The life of an offer.


async def test_create_update_activate_then_a_new_version_takes_over(db: CatalogDb) -> None:
    servicer = db.servicer()
    v1 = await create(db, new_offer(description="first"))
    assert (v1.version, v1.status) == (1, c.CHARGE_OFFER_STATUS_DRAFT)
    assert v1.create_time.ToDatetime(tzinfo=UTC) == NOW
    assert not v1.HasField("valid_from")

    # A draft changes: only the masked fields.
    updated = await servicer.UpdateChargeOffer(
        pb.UpdateChargeOfferRequest(
            charge_offer=c.ChargeOffer(
                charge_offer_id=v1.charge_offer_id,
                name="API Pro 2031",
                description="ignored",
                charges=[API_CALLS, STORAGE],
            ),
            update_mask=FieldMask(paths=["name", "charges"]),
        ),
        NO_CONTEXT,
    )
    assert updated.charge_offer.name == "API Pro 2031"
    assert updated.charge_offer.description == "first"
    assert [ch.code for ch in updated.charge_offer.charges] == ["api_calls", "storage"]
    assert await get(db, charge_offer_id=v1.charge_offer_id) == updated.charge_offer

    # Activation: in force from now (valid_from unset), open-ended.
    active = await activate(db, v1.charge_offer_id)
    assert active.status == c.CHARGE_OFFER_STATUS_ACTIVE
    assert from_timestamp(active.valid_from) == NOW and not active.HasField("valid_to")
    assert from_timestamp(active.activate_time) == NOW

    # An active version is immutable.
    with pytest.raises(FailedPrecondition) as immutable:
        await servicer.UpdateChargeOffer(
            pb.UpdateChargeOfferRequest(
                charge_offer=c.ChargeOffer(charge_offer_id=v1.charge_offer_id, name="Changed"),
                update_mask=FieldMask(paths=["name"]),
            ),
            NO_CONTEXT,
        )
    assert immutable.value.reason == "CHARGE_OFFER_IMMUTABLE"
    with pytest.raises(FailedPrecondition) as again:
        await activate(db, v1.charge_offer_id)
    assert again.value.reason == "CHARGE_OFFER_NOT_DRAFT"

    # Creating with the same code makes version 2, a draft; version 1 is untouched.
    v2 = await create(db, new_offer(charges=[MONTHLY], valid_from=T2))
    assert (v2.version, v2.status) == (2, c.CHARGE_OFFER_STATUS_DRAFT)
    assert await get(db, charge_offer_id=v1.charge_offer_id) == active
    # By code alone: the version in force now, not the newer draft.
    assert (await get(db, code="api_pro")).version == 1

    # Activating version 2 ends version 1 where version 2 starts.
    db.clock.advance(timedelta(hours=1))
    active2 = await activate(db, v2.charge_offer_id)
    assert from_timestamp(active2.valid_from) == T2 and not active2.HasField("valid_to")
    ended = await get(db, charge_offer_id=v1.charge_offer_id)
    assert ended.status == c.CHARGE_OFFER_STATUS_ACTIVE
    assert from_timestamp(ended.valid_to) == T2

    # The version in force at an instant.
    assert (await get(db, code="api_pro", at_time=to_timestamp(T2 - timedelta(microseconds=1)))).version == 1
    assert (await get(db, code="api_pro", at_time=to_timestamp(T2))).version == 2
    assert (await get(db, code="api_pro", at_time=to_timestamp(T2 + timedelta(days=999)))).version == 2
    assert (await get(db, code="api_pro")).version == 1  # now is before T2
    with pytest.raises(NotFound) as before_any:
        await get(db, code="api_pro", at_time=to_timestamp(NOW - timedelta(seconds=1)))
    assert before_any.value.reason == "CHARGE_OFFER_NOT_FOUND"

    # Retired: no longer purchasable, still the version in force (existing purchases keep rating).
    retired = await servicer.RetireChargeOffer(
        pb.RetireChargeOfferRequest(charge_offer_id=v2.charge_offer_id), NO_CONTEXT
    )
    assert retired.charge_offer.status == c.CHARGE_OFFER_STATUS_RETIRED
    assert from_timestamp(retired.charge_offer.retire_time) == NOW + timedelta(hours=1)
    assert (await get(db, code="api_pro", at_time=to_timestamp(T2))).status == c.CHARGE_OFFER_STATUS_RETIRED
    with pytest.raises(FailedPrecondition) as twice:
        await servicer.RetireChargeOffer(pb.RetireChargeOfferRequest(charge_offer_id=v2.charge_offer_id), NO_CONTEXT)
    assert twice.value.reason == "CHARGE_OFFER_NOT_ACTIVE"

    # Every change that matters to a catalog cache was published.
    published = await db.published()
    assert [s for s, _ in published] == [
        "evolutivo.charging.v1.charge_offer.activated",
        "evolutivo.charging.v1.charge_offer.activated",
        "evolutivo.charging.v1.charge_offer.retired",
    ]
    first = events_pb2.ChargeOfferActivated.FromString(published[0][1])
    assert first.charge_offer == active and not first.HasField("replaced")
    second = events_pb2.ChargeOfferActivated.FromString(published[1][1])
    assert second.charge_offer == active2 and second.replaced == ended
    assert events_pb2.ChargeOfferRetired.FromString(published[2][1]).charge_offer == retired.charge_offer


async def test_by_code_alone_before_anything_is_in_force_is_the_latest_version(db: CatalogDb) -> None:
    await create(db, new_offer())
    v2 = await create(db, new_offer(name="Second draft"))
    assert await get(db, code="api_pro") == v2
    with pytest.raises(NotFound):
        await get(db, code="api_pro", at_time=to_timestamp(NOW))
    with pytest.raises(NotFound):
        await get(db, code="nothing_here")


async def test_a_new_version_cannot_start_before_the_one_it_replaces(db: CatalogDb) -> None:
    v1 = await create(db, new_offer(valid_from=T2))
    await activate(db, v1.charge_offer_id)
    early = await create(db, new_offer(valid_from=T2 - timedelta(days=1)))
    with pytest.raises(FailedPrecondition) as overlap:
        await activate(db, early.charge_offer_id)
    assert overlap.value.reason == "CHARGE_OFFER_OVERLAP"
    # Nothing changed: the draft is still a draft, version 1 still open-ended.
    assert (await get(db, charge_offer_id=early.charge_offer_id)).status == c.CHARGE_OFFER_STATUS_DRAFT
    assert not (await get(db, charge_offer_id=v1.charge_offer_id)).HasField("valid_to")
    assert [subject for subject, _ in await db.published()] == ["evolutivo.charging.v1.charge_offer.activated"]


async def test_a_version_that_ended_before_it_started_cannot_be_activated(db: CatalogDb) -> None:
    draft = await create(db, new_offer(valid_to=to_timestamp(NOW + timedelta(days=1))))
    db.clock.advance(timedelta(days=2))
    with pytest.raises(FailedPrecondition) as ended:
        await activate(db, draft.charge_offer_id)
    assert ended.value.reason == "CHARGE_OFFER_ENDED"


async def test_an_offer_without_charges_cannot_be_activated(db: CatalogDb) -> None:
    draft = await create(db, new_offer(charges=[]))
    with pytest.raises(FailedPrecondition) as empty:
        await activate(db, draft.charge_offer_id)
    assert empty.value.reason == "CHARGE_OFFER_EMPTY"


async def test_the_update_mask_clears_and_replaces(db: CatalogDb) -> None:
    draft = await create(db, new_offer(valid_from=T2, valid_to=to_timestamp(T2 + timedelta(days=10))))
    response = await db.servicer().UpdateChargeOffer(
        pb.UpdateChargeOfferRequest(
            charge_offer=c.ChargeOffer(charge_offer_id=draft.charge_offer_id, currency_code="JPY"),
            update_mask=FieldMask(paths=["valid_to", "currency_code"]),
        ),
        NO_CONTEXT,
    )
    assert response.charge_offer.currency_code == "JPY"
    assert from_timestamp(response.charge_offer.valid_from) == T2
    assert not response.charge_offer.HasField("valid_to")


# Concurrency.


async def test_concurrent_activations_of_one_code_leave_one_version_open_ended(db: CatalogDb) -> None:
    v1 = await create(db, new_offer())
    await activate(db, v1.charge_offer_id)
    db.clock.advance(timedelta(minutes=1))
    # Two drafts that would both start now: whichever activates second is refused (it cannot
    # start where the first starts), and never by the database's constraint.
    drafts = [await create(db, new_offer()) for _ in range(2)]
    # Two drafts starting at different instants: both may succeed, in either order.
    later = [await create(db, new_offer(valid_from=T2 + timedelta(days=i))) for i in range(2)]

    outcomes = await asyncio.gather(
        *(activate(db, d.charge_offer_id) for d in [*drafts, *later]), return_exceptions=True
    )
    for outcome in outcomes:
        assert isinstance(outcome, c.ChargeOffer | FailedPrecondition), outcome
    assert sum(isinstance(o, c.ChargeOffer) for o in outcomes[:2]) <= 1

    versions = [o for p in await list_all(db, 100, code="api_pro") for o in p.charge_offers]
    activated = sorted(
        (v for v in versions if v.status != c.CHARGE_OFFER_STATUS_DRAFT), key=lambda v: from_timestamp(v.valid_from)
    )
    assert sum(not v.HasField("valid_to") for v in activated) == 1
    assert not activated[-1].HasField("valid_to")
    for earlier, following in itertools.pairwise(activated):
        # The windows tile time: each ends where the next starts.
        assert from_timestamp(earlier.valid_to) == from_timestamp(following.valid_from)


async def test_concurrent_creations_of_one_code_number_versions_consecutively(db: CatalogDb) -> None:
    created = await asyncio.gather(*(create(db, new_offer(code="fresh")) for _ in range(6)))
    assert sorted(o.version for o in created) == [1, 2, 3, 4, 5, 6]


# Idempotency and errors.


async def test_a_retried_create_returns_the_first_offer(db: CatalogDb) -> None:
    request_id = str(uuid.uuid4())
    first = await create(db, new_offer(), request_id)
    again = await create(db, new_offer(), request_id)
    assert again == first
    assert await db.count(charge_offers) == 1
    raced = await asyncio.gather(*(create(db, new_offer(code="raced"), str(uuid.UUID(int=7))) for _ in range(4)))
    assert len({o.charge_offer_id for o in raced}) == 1
    assert await db.count(charge_offers) == 2


@pytest.mark.parametrize(
    ("offer", "field"),
    [
        (new_offer(currency_code="EURO"), "charge_offer.currency_code"),
        (new_offer(currency_code="eur"), "charge_offer.currency_code"),
        (new_offer(currency_code="XAU"), "charge_offer.currency_code"),
        (new_offer(code="API Pro"), "charge_offer.code"),
        (new_offer(name=""), "charge_offer.name"),
        (
            new_offer(
                charges=[API_CALLS, API_CALLS, c.Charge(code="x", event_type="e", flat=c.FlatPrice(amount="1x"))]
            ),
            "charge_offer.charges[2].flat.amount",
        ),
        (new_offer(charges=[API_CALLS, API_CALLS]), "charge_offer.charges[1].code"),
        (
            new_offer(valid_from=T2, valid_to=to_timestamp(T2 - timedelta(seconds=1))),
            "charge_offer.valid_to",
        ),
    ],
)
async def test_bad_offers_are_refused_naming_the_field_and_write_nothing(
    db: CatalogDb, offer: c.ChargeOffer, field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await create(db, offer, str(uuid.uuid4()))
    assert refused.value.field == field
    assert await db.count(charge_offers) == 0
    assert await db.count(request_log) == 0


async def test_bad_updates_name_the_field_and_change_nothing(db: CatalogDb) -> None:
    draft = await create(db, new_offer())
    servicer = db.servicer()

    async def update(offer: c.ChargeOffer, *paths: str) -> str:
        with pytest.raises(InvalidArgument) as refused:
            await servicer.UpdateChargeOffer(
                pb.UpdateChargeOfferRequest(charge_offer=offer, update_mask=FieldMask(paths=list(paths))), NO_CONTEXT
            )
        return refused.value.field

    oid = draft.charge_offer_id
    assert await update(c.ChargeOffer(charge_offer_id=oid, name="x")) == "update_mask"
    assert await update(c.ChargeOffer(charge_offer_id=oid, code="other"), "code") == "update_mask"
    assert await update(c.ChargeOffer(charge_offer_id=oid, currency_code="ABC"), "currency_code") == (
        "charge_offer.currency_code"
    )
    assert await update(c.ChargeOffer(charge_offer_id="nope"), "name") == "charge_offer.charge_offer_id"
    bad_tier = c.Charge(
        code="s", event_type="e", volume=c.TieredPrice(tiers=[c.Tier(up_to="5", unit_price="1"), c.Tier(unit_price="")])
    )
    assert await update(c.ChargeOffer(charge_offer_id=oid, charges=[API_CALLS, bad_tier]), "charges") == (
        "charge_offer.charges[1].volume.tiers[1].unit_price"
    )
    assert await get(db, charge_offer_id=oid) == draft
    with pytest.raises(NotFound):
        await servicer.UpdateChargeOffer(
            pb.UpdateChargeOfferRequest(
                charge_offer=c.ChargeOffer(charge_offer_id=str(uuid.uuid4()), name="x"),
                update_mask=FieldMask(paths=["name"]),
            ),
            NO_CONTEXT,
        )


@pytest.mark.parametrize(
    ("request_", "field_name"),
    [
        (pb.GetChargeOfferRequest(), "charge_offer_id"),
        (pb.GetChargeOfferRequest(charge_offer_id="nope"), "charge_offer_id"),
        (pb.GetChargeOfferRequest(charge_offer_id=str(uuid.uuid4()), code="api_pro"), "code"),
        (pb.GetChargeOfferRequest(charge_offer_id=str(uuid.uuid4()), at_time=to_timestamp(NOW)), "at_time"),
        (pb.ActivateChargeOfferRequest(charge_offer_id=""), "charge_offer_id"),
        (pb.RetireChargeOfferRequest(charge_offer_id="x"), "charge_offer_id"),
        (pb.CreateChargeOfferRequest(), "charge_offer"),
        (pb.CreateChargeOfferRequest(charge_offer=new_offer(), request_id="not-a-uuid"), "request_id"),
        (pb.ListChargeOffersRequest(page_size=-1), "page_size"),
        (pb.ListChargeOffersRequest(page_token="!!!!"), "page_token"),
        (pb.ListChargeOffersRequest(status=9), "status"),  # type: ignore[arg-type]
    ],
)
async def test_bad_requests_name_the_field(db: CatalogDb, request_: Any, field_name: str) -> None:
    servicer = db.servicer()
    method = getattr(servicer, type(request_).__name__.removesuffix("Request"))
    with pytest.raises(InvalidArgument) as refused:
        await method(request_, NO_CONTEXT)
    assert refused.value.field == field_name


async def test_unknown_versions_are_not_found(db: CatalogDb) -> None:
    servicer = db.servicer()
    for call in (
        servicer.ActivateChargeOffer(pb.ActivateChargeOfferRequest(charge_offer_id=str(uuid.uuid4())), NO_CONTEXT),
        servicer.RetireChargeOffer(pb.RetireChargeOfferRequest(charge_offer_id=str(uuid.uuid4())), NO_CONTEXT),
        servicer.GetChargeOffer(pb.GetChargeOfferRequest(charge_offer_id=str(uuid.uuid4())), NO_CONTEXT),
    ):
        with pytest.raises(NotFound) as missing:
            await call
        assert missing.value.reason == "CHARGE_OFFER_NOT_FOUND"


# Listing.


async def test_pages_list_every_version_once_by_code_then_newest_version(db: CatalogDb) -> None:
    for code, versions in [("gamma", 2), ("alpha", 3), ("beta", 1)]:
        for _ in range(versions):
            await create(db, new_offer(code=code))
    first_alpha = (await list_all(db, 10, code="alpha"))[0].charge_offers[-1]
    await activate(db, first_alpha.charge_offer_id)

    pages = await list_all(db, 2)
    assert [len(p.charge_offers) for p in pages] == [2, 2, 2]
    listed = [(o.code, o.version) for p in pages for o in p.charge_offers]
    assert listed == [("alpha", 3), ("alpha", 2), ("alpha", 1), ("beta", 1), ("gamma", 2), ("gamma", 1)]

    (only_alpha,) = await list_all(db, 5, code="alpha")
    assert [o.version for o in only_alpha.charge_offers] == [3, 2, 1]
    active = await list_all(db, 1, status=c.CHARGE_OFFER_STATUS_ACTIVE)
    assert [(o.code, o.version) for p in active for o in p.charge_offers] == [("alpha", 1)]
    drafts = await list_all(db, 4, status=c.CHARGE_OFFER_STATUS_DRAFT)
    assert [len(p.charge_offers) for p in drafts] == [4, 1]

    # A token only continues the listing it came from.
    with pytest.raises(InvalidArgument) as refused:
        await db.servicer().ListChargeOffers(
            pb.ListChargeOffersRequest(page_size=2, page_token=pages[0].next_page_token, code="alpha"), NO_CONTEXT
        )
    assert refused.value.field == "page_token"


async def test_versions_created_after_a_page_appear_on_a_later_page(db: CatalogDb) -> None:
    for code in ("a", "c"):
        await create(db, new_offer(code=code))
    first = await db.servicer().ListChargeOffers(pb.ListChargeOffersRequest(page_size=1), NO_CONTEXT)
    assert [o.code for o in first.charge_offers] == ["a"]
    await create(db, new_offer(code="b"))
    await create(db, new_offer(code="a"))  # version 2 of a: sorts before the token, not listed again
    rest = await db.servicer().ListChargeOffers(
        pb.ListChargeOffersRequest(page_size=10, page_token=first.next_page_token), NO_CONTEXT
    )
    assert [(o.code, o.version) for o in rest.charge_offers] == [("b", 1), ("c", 1)]


# Over real gRPC, through the runtime's interceptor.


async def test_grpc_status_codes(db: CatalogDb) -> None:
    async with serving(
        pb_grpc.add_ChargingServiceServicer_to_server, db.servicer(), ServiceInterceptor("charging.evolutivo.io")
    ) as channel:
        stub = pb_grpc.ChargingServiceStub(channel)
        bad = new_offer(charges=[c.Charge(code="x", event_type="e", per_unit=c.PerUnitPrice(unit_price="NaN"))])
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.CreateChargeOffer(pb.CreateChargeOfferRequest(charge_offer=bad))
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(invalid.value) == ["charge_offer.charges[0].per_unit.unit_price"]

        created = (await stub.CreateChargeOffer(pb.CreateChargeOfferRequest(charge_offer=new_offer()))).charge_offer
        await stub.ActivateChargeOffer(pb.ActivateChargeOfferRequest(charge_offer_id=created.charge_offer_id))
        with pytest.raises(grpc.aio.AioRpcError) as immutable:
            await stub.UpdateChargeOffer(
                pb.UpdateChargeOfferRequest(
                    charge_offer=c.ChargeOffer(charge_offer_id=created.charge_offer_id, name="x"),
                    update_mask=FieldMask(paths=["name"]),
                )
            )
        assert immutable.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "only a draft changes" in (immutable.value.details() or "")

        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetChargeOffer(
                pb.GetChargeOfferRequest(code="api_pro", at_time=to_timestamp(NOW - timedelta(days=1)))
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
